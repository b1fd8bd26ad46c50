/* fhir_suggest — "did you mean": the nearest of a list of known words to a word that is not
 * one of them (an option, a command, a configuration key), by edit distance. */
#ifndef FHIR_SUGGEST_H
#define FHIR_SUGGEST_H

#include <stddef.h>

#define FHIR_SUGGEST_MAX_LEN 64 /* words longer than this are never near anything */

/* Edit distance of a and b (insertions, deletions, substitutions and swaps of neighbouring
 * characters, each 1); words longer than FHIR_SUGGEST_MAX_LEN give SIZE_MAX. */
size_t fhir_suggest_distance(const char *a, const char *b);

/* The candidate nearest to word when it is near enough to be a likely typo (distance at most
 * 1 for words of up to 3 characters, 2 up to 6, 3 beyond), else NULL. The first of equally
 * near candidates wins. Borrowed from cands. */
const char *fhir_suggest(const char *word, const char *const *cands, size_t n);

#endif
