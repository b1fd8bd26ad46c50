/* web_timeline — the lines-of-therapy timeline as server-rendered SVG (web.h). */
#include "web_int.h"

#include <stdio.h>
#include <string.h>

#include "fhir_clock.h"
#include "map_lot.h"

#define TL_LEFT 8       /* px before the first day */
#define TL_RIGHT 64     /* px after today (its label) */
#define TL_ROW 34       /* px per line of therapy */
#define TL_TOP 22       /* px above the first line (year ticks) */
#define TL_MARKS 30     /* px below the lines for the response / progression marks */

static double xpos(int64_t day, int64_t from, int64_t to, int width)
{
    double span = (double)(to - from);
    if (span < 1)
        span = 1;
    return TL_LEFT + (double)(day - from) * (double)(width - TL_LEFT - TL_RIGHT) / span;
}

void web_timeline_svg(fhir_buf *b, const map_profile *p, int64_t today, int width)
{
    size_t nl = map_profile_line_count(p), ne = map_profile_event_count(p);
    int64_t from = today - 365, to = today;
    for (size_t i = 0; i < nl; i++) {
        const map_line *l = map_profile_line(p, i);
        if (l->start_days < from)
            from = l->start_days;
    }
    for (size_t i = 0; i < ne; i++) {
        const map_event *e = map_profile_event(p, i);
        if (e->day < from)
            from = e->day;
        if (e->day > to)
            to = e->day;
    }
    from -= 30; /* a little room before the first event */
    int height = TL_TOP + (int)(nl ? nl : 1) * TL_ROW + TL_MARKS;
    fhir_buf_printf(b, "<svg class=\"timeline\" role=\"img\" aria-labelledby=\"tl-title tl-desc\" viewBox=\"0 0 %d %d\" "
                       "width=\"%d\" height=\"%d\" xmlns=\"http://www.w3.org/2000/svg\">",
                    width, height, width, height);
    fhir_buf_printf(b, "<title id=\"tl-title\">Lines of therapy</title><desc id=\"tl-desc\">%zu line%s of therapy, "
                       "%zu response or progression record%s</desc>",
                    nl, nl == 1 ? "" : "s", ne, ne == 1 ? "" : "s");
    /* year ticks */
    int y0, y1;
    unsigned m, d;
    fhir_clock_civil_from_days(from, &y0, &m, &d);
    fhir_clock_civil_from_days(to, &y1, &m, &d);
    int step = y1 - y0 > 12 ? 5 : y1 - y0 > 6 ? 2 : 1;
    for (int y = y0 + 1; y <= y1; y += step) {
        double x = xpos(fhir_clock_days_from_civil(y, 1, 1), from, to, width);
        fhir_buf_printf(b, "<line class=\"tick\" x1=\"%.1f\" y1=\"14\" x2=\"%.1f\" y2=\"%d\"/>"
                           "<text class=\"tick\" x=\"%.1f\" y=\"11\">%d</text>",
                        x, x, height - 4, x + 2, y);
    }
    if (nl == 0)
        fhir_buf_printf(b, "<text class=\"empty\" x=\"%d\" y=\"%d\">No line of therapy recorded</text>", TL_LEFT,
                        TL_TOP + 20);
    for (size_t i = 0; i < nl; i++) {
        const map_line *l = map_profile_line(p, i);
        double x1 = xpos(l->start_days, from, to, width), x2 = xpos(l->end_days, from, to, width);
        if (x2 - x1 < 3)
            x2 = x1 + 3;
        int y = TL_TOP + (int)i * TL_ROW;
        const char *cls = l->is_car_t ? "bar cart" : l->has_auto_hct || l->has_allo_hct ? "bar hct" : "bar";
        char s1[16], s2[16];
        web_day(l->start_days, s1);
        web_day(l->end_days, s2);
        fhir_buf_printf(b, "<g class=\"line\"><rect class=\"%s\" x=\"%.1f\" y=\"%d\" width=\"%.1f\" height=\"12\" rx=\"2\">"
                           "<title>Line %d, %s to %s%s</title></rect>",
                        cls, x1, y + 4, x2 - x1, l->number, s1, s2, l->end_unknown ? " or later" : "");
        bool right = x1 > width * 0.5; /* a late line's words end at its bar */
        fhir_buf_printf(b, "<text class=\"drugs\" x=\"%.1f\" y=\"%d\" text-anchor=\"%s\">Line %d: ", right ? x2 : x1,
                        y + 28, right ? "end" : "start", l->number);
        for (size_t k = 0; k < l->ndrugs; k++) {
            if (k)
                fhir_buf_puts(b, " + ");
            web_esc(b, l->drugs[k]);
        }
        if (l->unknown_agents)
            fhir_buf_puts(b, l->ndrugs ? " + agents not recorded" : "agents not recorded");
        if (l->is_car_t)
            fhir_buf_puts(b, " (CAR T)");
        if (l->has_auto_hct)
            fhir_buf_puts(b, " (autologous transplant)");
        if (l->has_allo_hct)
            fhir_buf_puts(b, " (allogeneic transplant)");
        fhir_buf_puts(b, "</text></g>");
    }
    /* responses (circles), progressions (triangles), transplants and CAR T (diamonds) along the
     * bottom */
    int my = height - TL_MARKS + 12;
    for (size_t i = 0; i < ne; i++) {
        const map_event *e = map_profile_event(p, i);
        double x = xpos(e->day, from, to, width);
        char ds[16];
        web_day(e->day, ds);
        const char *what = map_event_kind_text(e->kind);
        if (e->kind == MAP_EVENT_PROGRESSION)
            fhir_buf_printf(b, "<path class=\"mark prog\" d=\"M%.1f %d l6 10 h-12 z\"><title>%s %s</title></path>", x, my - 6,
                            what, ds);
        else if (e->kind == MAP_EVENT_RESPONSE)
            fhir_buf_printf(b, "<circle class=\"mark resp\" cx=\"%.1f\" cy=\"%d\" r=\"5\"><title>%s %s</title></circle>", x,
                            my, what, ds);
        else
            fhir_buf_printf(b, "<path class=\"mark %s\" d=\"M%.1f %d l6 6 l-6 6 l-6 -6 z\"><title>%s %s</title></path>",
                            e->kind == MAP_EVENT_CAR_T || e->kind == MAP_EVENT_CAR_T_COLLECTION ? "cart" : "hct", x,
                            my - 6, what, ds);
    }
    double xt = xpos(today, from, to, width);
    fhir_buf_printf(b, "<line class=\"today\" x1=\"%.1f\" y1=\"14\" x2=\"%.1f\" y2=\"%d\"/>"
                       "<text class=\"today\" x=\"%.1f\" y=\"%d\">today</text></svg>",
                    xt, xt, height - 2, xt + 3, height - 4);
}
