/* fhir_buf — growable byte buffer with a hard byte cap.
 * Every growable buffer in cartgate is one of these, so each has a limit set at creation. */
#ifndef FHIR_BUF_H
#define FHIR_BUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef struct fhir_buf {
    char *data;     /* always NUL-terminated when len > 0 or after fhir_buf_cstr() */
    size_t len;
    size_t alloc;
    size_t cap;     /* maximum len; 0 = no cap (only for trusted, bounded content) */
    bool overflow;  /* set once an append hit the cap; further appends are dropped */
} fhir_buf;

/* Initialises an empty buffer (no allocation yet). Caller calls fhir_buf_free(). */
void fhir_buf_init(fhir_buf *b, size_t cap);
void fhir_buf_free(fhir_buf *b);
void fhir_buf_reset(fhir_buf *b); /* len = 0, overflow cleared, memory kept */

/* Appends; returns 0, or -1 (and sets overflow) when the cap would be exceeded. */
int fhir_buf_append(fhir_buf *b, const void *p, size_t n);
int fhir_buf_putc(fhir_buf *b, char c);
/* Room for n more bytes (and the NUL) within the cap, for a writer that fills b->data + b->len
 * itself, then advances b->len and NUL-terminates. 0, or -1 (overflow set) at the cap. */
int fhir_buf_reserve(fhir_buf *b, size_t n);
int fhir_buf_puts(fhir_buf *b, const char *s);
int fhir_buf_printf(fhir_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same with a va_list (ap is not consumed: the caller still va_end()s it). */
int fhir_buf_vprintf(fhir_buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/* printf's "%.<prec>f" of v into out (size bytes, NUL-terminated, truncated as snprintf does),
 * without printf's cost where the rounding is not a near tie. Returns the full length. */
size_t fhir_fmt_fixed(char *out, size_t size, double v, unsigned prec);

/* Appends s (may be NULL) escaped for HTML text and attribute values (& < > " '). */
int fhir_buf_html_escape(fhir_buf *b, const char *s);

/* Borrowed NUL-terminated view of the contents, valid until the next append or free. */
const char *fhir_buf_cstr(fhir_buf *b);

/* Hands the malloc'd contents to the caller (caller frees) and resets b to empty. */
char *fhir_buf_steal(fhir_buf *b, size_t *len_out);

struct fhir_error;
/* Appends the whole of file path ("-" = standard input) to b, within b's cap. Returns 0, or
 * -1 with err = "PATH: why" (cannot open: the system's reason; "larger than CAP bytes" with
 * b->overflow set; read error). */
int fhir_buf_read_file(fhir_buf *b, const char *path, struct fhir_error *err);
/* The same from an open stream (left open); name is used in err. */
int fhir_buf_read_stream(fhir_buf *b, FILE *f, const char *name, struct fhir_error *err);

#endif
