/* cmd_users — the people (and services) who may use cartgate, on the store directly:
 *   cartgate users add NAME --role ROLE --db FILE [--display TEXT] [--service]
 *                  [--password-stdin | --no-password]
 *   cartgate users list --db FILE [--json]
 *   cartgate users disable|enable NAME --db FILE
 *   cartgate users passwd NAME --db FILE [--password-stdin | --no-password]
 *   cartgate users role NAME ROLE --db FILE
 *   cartgate users token NAME --db FILE [--role ROLE] [--days N] [--label TEXT]
 *   cartgate users tokens NAME --db FILE            (list, never the secrets)
 *   cartgate users revoke NAME TOKEN-ID --db FILE
 * ROLE: viewer, clinician, intake, admin. A password is read from the terminal without echo
 * (asked twice) or, with --password-stdin, from the first line of standard input; never from
 * the command line. A token is printed once, on stdout; only its hash is stored. Every change
 * is audited with the operating-system user at the command line ("local:<user>"). */
#include <getopt.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "access.h"
#include "cmd.h"
#include "fhir_clock.h"
#include "fhir_json.h"
#include "fhir_log.h"
#include "store.h"

typedef struct opts {
    const char *db, *display, *role, *label;
    bool service, password_stdin, no_password, json;
    long days;
} opts;

static void usage(FILE *f)
{
    fprintf(f, "usage: cartgate users <action> --db FILE [options]\n"
               "  add NAME --role ROLE [--display TEXT] [--service] [--password-stdin | --no-password]\n"
               "  list [--json]                     users, their roles and state (no secrets)\n"
               "  disable NAME | enable NAME        a disabled user's sessions end, tokens stop working\n"
               "  passwd NAME [--password-stdin | --no-password]   set (or remove) the local password\n"
               "  role NAME ROLE                    change the role\n"
               "  token NAME [--role ROLE] [--days N] [--label TEXT]   a new API token, printed once\n"
               "  tokens NAME                       the user's tokens (ids, roles, expiry; never secrets)\n"
               "  revoke NAME TOKEN-ID              revoke a token\n"
               "ROLE: viewer, clinician, intake, admin. Passwords come from the terminal (no echo) or\n"
               "--password-stdin, never from the command line.\n");
}

static int read_line(FILE *in, char *buf, size_t n)
{
    if (!fgets(buf, (int)n, in))
        return -1;
    buf[strcspn(buf, "\r\n")] = 0;
    return 0;
}

/* Reads a password: stdin's first line, or twice from the terminal without echo. */
static int get_password(const opts *o, char *buf, size_t n)
{
    if (o->password_stdin || !isatty(STDIN_FILENO))
        return read_line(stdin, buf, n);
    struct termios old, noecho;
    if (tcgetattr(STDIN_FILENO, &old))
        return -1;
    noecho = old;
    noecho.c_lflag &= ~(tcflag_t)ECHO;
    char again[PWHASH_MAX_LEN + 2];
    fprintf(stderr, "Password: ");
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &noecho);
    int rc = read_line(stdin, buf, n);
    fprintf(stderr, "\nAgain: ");
    if (!rc)
        rc = read_line(stdin, again, sizeof again);
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
    fprintf(stderr, "\n");
    if (!rc && strcmp(buf, again)) {
        fprintf(stderr, "cartgate users: the two passwords differ\n");
        rc = -1;
    }
    OPENSSL_cleanse(again, sizeof again);
    return rc;
}

static int parse_role(const char *s, role *r)
{
    if (role_parse(s, r)) {
        fprintf(stderr, "cartgate users: unknown role '%s' (viewer, clinician, intake, admin)\n", s ? s : "");
        return -1;
    }
    return 0;
}

static const char *when(int64_t ms, char *buf, size_t n)
{
    if (!ms)
        return "-";
    fhir_clock_format_instant(ms, buf, (unsigned)n);
    return buf;
}

typedef struct list_ctx {
    bool json;
    size_t n;
    fhir_buf *b;
} list_ctx;

static int list_user(void *ctx, const store_user *u)
{
    list_ctx *l = ctx;
    char t1[40];
    const char *auth = u->service ? "tokens" : u->pw_hash && u->oidc_subject ? "password+oidc"
                                           : u->pw_hash                      ? "password"
                                           : u->oidc_subject                 ? "oidc"
                                                                             : "none";
    if (l->json) {
        fhir_buf_puts(l->b, l->n++ ? ",{\"id\":" : "{\"id\":");
        fhir_buf_printf(l->b, "%lld,\"name\":", (long long)u->id);
        fhir_json_write_string(l->b, u->name, strlen(u->name));
        fhir_buf_printf(l->b, ",\"role\":\"%s\",\"kind\":\"%s\",\"sign_in\":\"%s\",\"disabled\":%s,\"last_login\":",
                        u->role, u->service ? "service" : "person", auth, u->disabled ? "true" : "false");
        if (u->last_login_ms)
            fhir_buf_printf(l->b, "\"%s\"}", when(u->last_login_ms, t1, sizeof t1));
        else
            fhir_buf_puts(l->b, "null}");
        return 0;
    }
    printf("%-5lld %-24s %-10s %-8s %-14s %-9s %s\n", (long long)u->id, u->name, u->role,
           u->service ? "service" : "person", auth, u->disabled ? "disabled" : "active",
           when(u->last_login_ms, t1, sizeof t1));
    return 0;
}

static int list_token(void *ctx, const store_token *t)
{
    (void)ctx;
    char a[40], b[40], c[40];
    printf("%-6lld %-10s %-26s %-26s %-26s %s\n", (long long)t->id, t->role, when(t->expires_ms, a, sizeof a),
           when(t->last_used_ms, b, sizeof b), t->revoked_ms ? when(t->revoked_ms, c, sizeof c) : "-",
           t->label[0] ? t->label : "-");
    return 0;
}

int cmd_users(int argc, char **argv)
{
    opts o = {.days = 90};
    static const struct option lo[] = {
        {"db", required_argument, NULL, 'd'},          {"display", required_argument, NULL, 'D'},
        {"role", required_argument, NULL, 'r'},        {"label", required_argument, NULL, 'l'},
        {"days", required_argument, NULL, 'n'},        {"service", no_argument, NULL, 's'},
        {"password-stdin", no_argument, NULL, 'p'},    {"no-password", no_argument, NULL, 'P'},
        {"json", no_argument, NULL, 'j'},              {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 'd': o.db = optarg; break;
        case 'D': o.display = optarg; break;
        case 'r': o.role = optarg; break;
        case 'l': o.label = optarg; break;
        case 'n': {
            char *end;
            o.days = strtol(optarg, &end, 10);
            if (*end || o.days < 1 || o.days > 3650) {
                fprintf(stderr, "cartgate users: --days: a whole number from 1 to 3650\n");
                return 2;
            }
            break;
        }
        case 's': o.service = true; break;
        case 'p': o.password_stdin = true; break;
        case 'P': o.no_password = true; break;
        case 'j': o.json = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    int npos = argc - optind;
    const char *action = npos > 0 ? argv[optind] : NULL;
    const char *name = npos > 1 ? argv[optind + 1] : NULL;
    const char *third = npos > 2 ? argv[optind + 2] : NULL;
    static const struct { const char *action; int args; } ACTIONS[] = {
        {"add", 1}, {"list", 0}, {"disable", 1}, {"enable", 1}, {"passwd", 1},
        {"role", 2}, {"token", 1}, {"tokens", 1}, {"revoke", 2},
    };
    int want = -1;
    for (size_t i = 0; action && i < sizeof ACTIONS / sizeof ACTIONS[0]; i++)
        if (!strcmp(action, ACTIONS[i].action))
            want = ACTIONS[i].args;
    if (want < 0 || npos - 1 != want) {
        fprintf(stderr, "cartgate users: %s\n", !action ? "no action" : want < 0 ? "unknown action" : "wrong number of arguments");
        usage(stderr);
        return 2;
    }
    if (!o.db) {
        fprintf(stderr, "cartgate users: --db FILE is required (the daemon's store.path)\n");
        return 2;
    }
    if (o.password_stdin && o.no_password) {
        fprintf(stderr, "cartgate users: --password-stdin and --no-password exclude each other\n");
        return 2;
    }
    fhir_error err = {0};
    store *st = store_open(o.db, 0, &err);
    if (!st) {
        fprintf(stderr, "cartgate users: %s\n", err.msg);
        return 1;
    }
    access_ctx *acc = access_new(st, NULL);
    access_principal me;
    struct passwd *pw = getpwuid(getuid());
    access_principal_local(&me, pw ? pw->pw_name : NULL);
    int rc = 0;
    char secret[PWHASH_MAX_LEN + 2] = "";
    role r = ROLE_UNSET;
    if (!strcmp(action, "add") || !strcmp(action, "passwd")) {
        bool wants_pw = !o.no_password && !o.service;
        if (!strcmp(action, "add") && (!o.role || parse_role(o.role, &r)))
            rc = o.role ? 2 : (fprintf(stderr, "cartgate users: add needs --role ROLE\n"), 2);
        else if (wants_pw && get_password(&o, secret, sizeof secret)) {
            fprintf(stderr, "cartgate users: no password read\n");
            rc = 1;
        } else if (!strcmp(action, "add"))
            rc = access_user_add(acc, name, o.display, r, o.service, wants_pw ? secret : NULL, &me, &err) ? 1 : 0;
        else
            rc = access_user_passwd(acc, name, wants_pw ? secret : NULL, &me, &err) ? 1 : 0;
        if (rc == 0)
            printf("%s: %s\n", name, !strcmp(action, "add") ? "added" : wants_pw ? "password set" : "password removed");
    } else if (!strcmp(action, "list")) {
        fhir_buf b;
        fhir_buf_init(&b, 64u << 20);
        list_ctx l = {.json = o.json, .b = &b};
        if (o.json)
            fhir_buf_puts(&b, "{\"users\":[");
        else
            printf("%-5s %-24s %-10s %-8s %-14s %-9s %s\n", "ID", "NAME", "ROLE", "KIND", "SIGN-IN", "STATE",
                   "LAST SIGN-IN");
        if (store_user_each(st, list_user, &l, &err) < 0)
            rc = 1;
        else if (o.json) {
            fhir_buf_puts(&b, "]}\n");
            fputs(fhir_buf_cstr(&b), stdout);
        }
        fhir_buf_free(&b);
    } else if (!strcmp(action, "disable") || !strcmp(action, "enable")) {
        rc = access_user_disable(acc, name, !strcmp(action, "disable"), &me, &err) ? 1 : 0;
        if (!rc)
            printf("%s: %sd\n", name, action);
    } else if (!strcmp(action, "role")) {
        rc = parse_role(third, &r) ? 2 : access_user_set_role(acc, name, r, &me, &err) ? 1 : 0;
        if (!rc)
            printf("%s: role %s\n", name, third);
    } else if (!strcmp(action, "token")) {
        if (o.role && parse_role(o.role, &r))
            rc = 2;
        else {
            char tok[ACCESS_TOKEN_LEN];
            int64_t id;
            rc = access_token_create(acc, name, r, o.days, o.label, &me, tok, &id, &err) ? 1 : 0;
            if (!rc) {
                fprintf(stderr, "token %lld for %s, valid %ld days; shown once, store it now:\n", (long long)id, name,
                        o.days);
                printf("%s\n", tok);
                OPENSSL_cleanse(tok, sizeof tok);
            }
        }
    } else if (!strcmp(action, "tokens")) {
        store_user u;
        int f = store_user_get(st, name, &u, &err);
        if (f <= 0) {
            if (f == 0)
                fhir_error_set(&err, "no such user: %s", name);
            rc = 1;
        } else {
            printf("%-6s %-10s %-26s %-26s %-26s %s\n", "ID", "ROLE", "EXPIRES", "LAST USED", "REVOKED", "LABEL");
            rc = store_token_each(st, u.id, list_token, NULL, &err) < 0;
            store_user_free(&u);
        }
    } else if (!strcmp(action, "revoke")) {
        char *end;
        long long id = strtoll(third, &end, 10);
        if (*end || id <= 0) {
            fprintf(stderr, "cartgate users: TOKEN-ID is a positive number (see: users tokens NAME)\n");
            rc = 2;
        } else {
            rc = access_token_revoke(acc, name, id, &me, &err) ? 1 : 0;
            if (!rc)
                printf("%s: token %lld revoked\n", name, id);
        }
    }
    OPENSSL_cleanse(secret, sizeof secret);
    if (rc == 1 && err.msg[0])
        fprintf(stderr, "cartgate users: %s\n", err.msg);
    access_free(acc);
    store_close(st);
    return rc;
}
