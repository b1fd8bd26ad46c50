/* elig_int.h — what the files of the eligibility engine share (private to gateway/rules/;
 * the public interface is elig.h):
 *   elig_load.c     criteria files -> compiled rule set (read with fhir_jsonfile: validation,
 *                   FILE:LINE errors)
 *   elig_ruleset.c  the rule set: parameters, hash, accessors, free
 *   elig_fact.c     a patient's facts compiled against a rule set; the profile as fact source
 *   elig_eval.c     Kleene three-valued evaluation (the hot path) and the result
 *   elig_explain.c  explanations and the screen JSON
 */
#ifndef ELIG_INT_H
#define ELIG_INT_H

#include <stdlib.h>
#include <string.h>

#include "elig.h"
#include "fhir_alloc.h"

#define ELIG_FILE_ARENA_CAP (16u * ELIG_MAX_FILE_BYTES) /* the parsed tree of one criteria file */

/* ======================================================================================
 * The compiled rule set.
 * ====================================================================================== */

enum { N_ALL, N_ANY, N_NOT, N_LEAF };
enum {
    OP_LT, OP_LE, OP_GT, OP_GE, OP_EQ, OP_NE, /* number */
    OP_TRUE, OP_FALSE,                         /* bool */
    OP_IN, OP_NOT_IN,                          /* code */
    OP_ANY_OF, OP_ALL_OF, OP_NONE_OF,          /* set */
};
/* Kleene truth values ordered so that AND = min, OR = max, NOT = 2 - x. */
enum { TF = 0, TU = 1, TT = 2, TNA = 3, TNE = 4 };
#define T_ASSUMED 8 /* result came from if_unknown, not from a known fact */
#define OTHER_BIT (1ull << 63)

typedef struct enode {
    uint8_t kind, op;
    int8_t if_unknown;     /* -1, or TF / TT */
    bool active;           /* if_param satisfied */
    uint16_t fact;
    uint16_t nkids;
    uint32_t kids;         /* first index into rs->kids */
    int32_t from, until;   /* in force on days [from, until) */
    double num;
    uint64_t mask;
    int16_t num_param;     /* value from a number parameter, or -1 */
    int16_t if_param;      /* code parameter gating this node, or -1 */
    uint64_t if_mask;      /* allowed parameter value indices */
    const char *label;
    const char *role;
    const char *value_text; /* the criterion's value as written, for descriptions */
    const char *file;
    int line;
} enode;

/* The fields evaluation reads, packed (40 bytes) so the whole rule set stays in cache. */
typedef struct hnode {
    uint8_t kind, op;
    int8_t if_unknown;
    uint8_t active;
    uint16_t fact;
    uint16_t nkids;
    uint32_t kids;
    int32_t from, until;
    double num;
    uint64_t mask;
} hnode;

typedef struct efact {
    const char *name;
    map_fact_type type;
    int8_t profile_ix;     /* map_fact_index(name), looked up once at load (-1: not a profile fact) */
    const char *codes[ELIG_MAX_CODES];
    size_t ncodes;
} efact;

typedef struct eparam {
    const char *name;
    bool is_number;
    const char *values[ELIG_MAX_CODES];
    size_t nvalues;
    double num;
    size_t code;           /* index into values */
    const char *description;
} eparam;

typedef struct eflag {
    uint16_t id;           /* index into rs->flag_ids (review flags and notes share it) */
    uint16_t uid;          /* identical "when" trees share one uid: evaluated once per patient */
    uint32_t node;
    const char *message;
} eflag;

typedef struct etiming {
    uint8_t urgency;
    uint32_t node;
    const char *reason;
} etiming;

typedef struct eind {
    const char *key, *product, *indication, *generic, *brand, *description, *file;
    const char *short_text; /* indication.short, else the description */
    const char *src_doc, *src_rev, *src_url, *src_ref;
    int32_t from, until;
    uint32_t root;
    uint32_t flag0, nflags; /* review flags and notes of the indication */
    uint32_t tim0, ntims;
    bool pending;          /* "status": "pending": not in force unless enabled */
    bool enabled;          /* a pending indication enabled by configuration */
    const char *prov;      /* its provenance entry, a JSON string (elig_provenance_json) */
} eind;

/* A refer-early trigger of a consult file (conf/criteria/consult_*.json). */
typedef struct etrig {
    const char *id, *reason, *source;
    uint8_t rec;           /* elig_consult */
    uint32_t node;
} etrig;

typedef struct econsult {
    const char *key, *description, *file;
    const char *src_doc, *src_rev, *src_url, *src_ref;
    uint32_t applies;      /* node: which patients the file is about */
    uint32_t trig0, ntrig;
    const char *prov;      /* its provenance entry, a JSON string (elig_provenance_json) */
} econsult;

struct elig_ruleset {
    eind *inds;
    size_t ninds;
    enode *nodes;
    size_t nnodes, cap_nodes;
    hnode *hot;            /* evaluation copy of nodes (built after loading) */
    uint32_t *kids;
    size_t nkids, cap_kids;
    efact facts[ELIG_MAX_FACTS];
    size_t nfacts;
    uint8_t fact_order[ELIG_MAX_FACTS]; /* fact indices sorted by name */
    const char *flag_ids[ELIG_MAX_FLAGS];
    bool flag_is_note[ELIG_MAX_FLAGS]; /* a note (not a threshold breach) rather than a flag */
    size_t nflag_ids;
    uint8_t flag_order[ELIG_MAX_FLAGS];
    eflag *flags;
    size_t nflags;
    size_t nuflags;        /* distinct flag conditions */
    etiming *tims;
    size_t ntims;
    econsult *consults;
    size_t nconsults;
    etrig *trigs;
    size_t ntrigs;
    bool show_pending;     /* evaluate pending indications into the "pending" lists */
    eparam *params;
    size_t nparams;
    char **strs;           /* every string the rule set owns */
    size_t nstrs, cap_strs;
    char files_hash[65];   /* hex SHA-256 over the sorted files */
    char overrides[1024];  /* "name=value\n" per override, in order */
    char hash[80];
    char param_text[64];   /* elig_ruleset_param() of a number */
};

typedef struct fval {
    bool known;
    bool b;
    int8_t bound;          /* numbers: 0 exact, +1 at least num, -1 at most num */
    double num;
    uint64_t bits;         /* codes / sets: established members */
    uint64_t maybe;        /* sets: possible members (all bits when the set is open) */
    const map_fact *src;
} fval;

struct elig_factset {
    const elig_ruleset *rs;
    fval v[ELIG_MAX_FACTS];
};

struct elig_result {
    size_t ninds, nnodes, nuflags;
    uint8_t *ustate;       /* per distinct flag condition: 0 not evaluated, 1 no, 2 raised */
    uint32_t *usrc;        /* eflag whose node was evaluated for that condition */
    uint8_t best;
    uint8_t urgency;
    int32_t urg_ind;       /* indication that set the urgency, -1 for none */
    int32_t urg_tim;       /* timing rule index (global), -1 = default reason */
    uint64_t miss_all;
    uint64_t flags;
    uint32_t flag_src[ELIG_MAX_FLAGS]; /* eflag index that raised each flag id */
    uint8_t *cat;
    uint8_t *pend;         /* category a pending indication would have (show_pending) */
    uint8_t consult;       /* elig_consult */
    uint8_t *trig;         /* per trigger: 1 raised */
    uint64_t *miss;
    int32_t *failed;       /* node index of the failed gate, -1 */
    uint8_t *out;          /* per node result of the last evaluation */
    uint64_t rec_read, rec_cached; /* elig_result_set_records: records read of those cached */
};

/* Label of node ni for explanations (borrowed from rs). */
static inline const char *node_label(const elig_ruleset *rs, uint32_t ni)
{
    const enode *n = &rs->nodes[ni];
    return n->label ? n->label : "criteria";
}

/* ---- elig_ruleset.c --------------------------------------------------------------------- */

/* Index of parameter name in rs->params, or -1. */
int elig_ruleset_param_index(const elig_ruleset *rs, const char *name);
/* Copies the parameter values into the nodes and rebuilds the evaluation copy (rs->hot). */
void elig_ruleset_apply_params(elig_ruleset *rs);
/* rs->hash from the files' hash and the parameter overrides. */
void elig_ruleset_compute_hash(elig_ruleset *rs);

/* elig_explain.c: the provenance entry "key: file; reference" of a criteria file as a JSON
 * string (quoted, escaped) into out: the loader keeps one per indication and consult file, and
 * the screen JSON copies it. */
void elig_provenance_json(fhir_buf *out, const char *key, const char *file, const char *ref);

#endif
