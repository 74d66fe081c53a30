/* The call-sequence tracker (see sqz_callseq.h for the contract). */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "sqz_callseq.h"

#define W SQZ_SEQ_WINDOW

struct sqz_callseq {
    /* The last W calls (ring, index = call index mod W). */
    uint64_t  sig[W];
    uint64_t  slot[W]; /* the slot id each call got (0: observed only) */
    uintptr_t addr[W];
    uint64_t  n;       /* calls so far */
    uint64_t  episode; /* first call of the learning window */
    /* The template (period > 0) or learning (period == 0). */
    uint64_t  period;
    uint32_t *tmpl;    /* period record indices */
    size_t    tmplcap;
    uint64_t  cursor;
    uint64_t  stable;   /* template hits since it was set */
    uint64_t  irr_seen; /* calls seen in the current miss-counting window */
    uint64_t  irr_win;  /* template misses (skips, irregular calls) in it */
    int       drop_moved;
    int       confirmed; /* every rank's addresses confirmed the template */
    uint64_t  heirs;     /* fresh slots that found an heir by address in this episode (kept in
                            checkpoints; decides nothing: it differs between ranks) */
    /* A period proposed and waiting for sqz_callseq_refine. */
    int       pending;
    uint64_t  pending_period, pending_run, pending_before;
    /* Calls so far of each signature (open addressing; key 0 is free, signature 0 is stored as
     * 1): a fresh slot starts its counter there. */
    uint64_t *occ_sig, *occ_n;
    size_t    nocc, capocc;
    /* Slot records; the id of the record at index k is (generation << 32) | (k + 1). */
    sqz_seq_slot_t *rec;
    uint8_t        *irreg; /* per record: it is an irregular slot */
    size_t          nrec, caprec;
    uint64_t        generation;
};

/* ---------------------------------------------------------------------------------------------
 * Records
 * ------------------------------------------------------------------------------------------- */
static size_t sqz_seq_index(uint64_t id) { return (size_t)(id & 0xffffffffu) - 1; }

sqz_seq_slot_t *sqz_callseq_slot(sqz_callseq_t *q, uint64_t id)
{
    const size_t k = sqz_seq_index(id);
    return (0 != id && k < q->nrec && q->rec[k].id == id) ? &q->rec[k] : NULL;
}

/* ---------------------------------------------------------------------------------------------
 * Calls per signature
 * ------------------------------------------------------------------------------------------- */
static uint64_t *sqz_seq_occ_slot(uint64_t *keys, size_t cap, uint64_t sig)
{
    size_t h = (size_t)(sig * 0x9e3779b97f4a7c15ull) & (cap - 1);
    while (0 != keys[h] && keys[h] != sig) {
        h = (h + 1) & (cap - 1);
    }
    return &keys[h];
}

/* Counts a call of `sig`.  \return the calls of `sig` before this one, or UINT64_MAX when out
 * of memory. */
static uint64_t sqz_seq_occ_bump(sqz_callseq_t *q, uint64_t sig)
{
    sig = sig ? sig : 1;
    if (2 * (q->nocc + 1) > q->capocc) {
        const size_t cap  = q->capocc ? 2 * q->capocc : 64;
        uint64_t    *keys = calloc(cap, sizeof(uint64_t)), *vals = calloc(cap, sizeof(uint64_t));
        if (NULL == keys || NULL == vals) {
            free(keys);
            free(vals);
            return UINT64_MAX;
        }
        for (size_t j = 0; j < q->capocc; j++) {
            if (q->occ_sig[j]) {
                uint64_t *k = sqz_seq_occ_slot(keys, cap, q->occ_sig[j]);
                *k                = q->occ_sig[j];
                vals[k - keys]    = q->occ_n[j];
            }
        }
        free(q->occ_sig);
        free(q->occ_n);
        q->occ_sig = keys, q->occ_n = vals, q->capocc = cap;
    }
    uint64_t *k = sqz_seq_occ_slot(q->occ_sig, q->capocc, sig);
    if (0 == *k) {
        *k = sig;
        q->nocc++;
    }
    return q->occ_n[k - q->occ_sig]++;
}

/* A new record (the lowest free index: deterministic, so every rank numbers slots alike). */
static sqz_seq_slot_t *sqz_seq_new(sqz_callseq_t *q, uint64_t sig, uint64_t calls, int irregular)
{
    size_t k = 0;
    while (k < q->nrec && 0 != q->rec[k].id) {
        k++;
    }
    if (k == q->nrec) {
        if (q->nrec == q->caprec) {
            const size_t    cap = q->caprec ? 2 * q->caprec : 64;
            sqz_seq_slot_t *r   = realloc(q->rec, cap * sizeof(*r));
            if (NULL == r) {
                return NULL;
            }
            q->rec      = r;
            uint8_t *ir = realloc(q->irreg, cap);
            if (NULL == ir) {
                return NULL;
            }
            q->irreg  = ir;
            q->caprec = cap;
        }
        q->nrec++;
    }
    q->generation++;
    q->rec[k]   = (sqz_seq_slot_t){.id = (q->generation << 32) | (uint64_t)(k + 1), .sig = sig,
                                   .calls = calls};
    q->irreg[k] = (uint8_t)irregular;
    return &q->rec[k];
}

/* For a fresh slot: the most recent live, unpinned slot of its signature whose last call used
 * `addr` (out->heir_of), and whether any other live slot of its signature exists. */
static void sqz_seq_kin(const sqz_callseq_t *q, const sqz_seq_slot_t *self, uintptr_t addr,
                        sqz_seq_place_t *out)
{
    const sqz_seq_slot_t *best = NULL;
    for (size_t j = 0; j < q->nrec; j++) {
        const sqz_seq_slot_t *r = &q->rec[j];
        if (r == self || 0 == r->id || r->sig != self->sig) {
            continue;
        }
        out->has_kin = 1;
        if (r->addr == addr && !r->pinned && (NULL == best || r->last_use > best->last_use)) {
            best = r;
        }
    }
    out->heir_of = best ? best->id : 0;
}

/* ---------------------------------------------------------------------------------------------
 * Learning
 * ------------------------------------------------------------------------------------------- */
static uint64_t sqz_seq_sig_at(const sqz_callseq_t *q, uint64_t i) { return q->sig[i % W]; }

static uint64_t sqz_seq_episode_len(const sqz_callseq_t *q)
{
    const uint64_t ep = q->n - q->episode;
    return ep < W ? ep : W;
}

/* Calls a period d must explain before it is proposed: two periods, and half the episode. */
static uint64_t sqz_seq_evidence(const sqz_callseq_t *q, uint64_t d)
{
    const uint64_t half = (sqz_seq_episode_len(q) + 1) / 2;
    return 2 * d > half ? 2 * d : half;
}

/* How many of the last calls (the current one included) are d-periodic in signature. */
static uint64_t sqz_seq_periodic_run(const sqz_callseq_t *q, uint64_t d)
{
    const uint64_t i  = q->n - 1;
    const uint64_t ep = sqz_seq_episode_len(q);
    uint64_t       k  = 0;
    while (k + d < ep && sqz_seq_sig_at(q, i - k) == sqz_seq_sig_at(q, i - k - d)) {
        k++;
    }
    return k + d;
}

/* The smallest period that explains its evidence (the current call is the last), or 0; *run
 * receives how many calls it explains. */
static uint64_t sqz_seq_find_period(const sqz_callseq_t *q, uint64_t *run)
{
    const uint64_t i  = q->n - 1;
    const uint64_t ep = sqz_seq_episode_len(q);
    const uint64_t s  = sqz_seq_sig_at(q, i);
    for (uint64_t d = 1; 2 * d <= ep; d++) {
        if (sqz_seq_sig_at(q, i - d) != s) {
            continue;
        }
        const uint64_t L = sqz_seq_evidence(q, d);
        if (L > ep) {
            return 0; /* the evidence needed only grows with d */
        }
        *run = sqz_seq_periodic_run(q, d);
        if (*run >= L) {
            return d;
        }
    }
    return 0;
}

/* This rank's confirmation of period P by its addresses: the smallest m P (m <= SQZ_SEQ_MAX_REFINE,
 * two periods inside the run of calls P explains) with which (signature, address) repeats: its
 * buffers are stable, and there are m P of them a period.  0 when none does (the addresses move,
 * or too few calls to tell). */
static uint64_t sqz_seq_confirm(const sqz_callseq_t *q, uint64_t P, uint64_t run)
{
    const uint64_t i = q->n - 1;
    for (uint64_t m = 1; m <= SQZ_SEQ_MAX_REFINE && 2 * m * P <= run; m++) {
        const uint64_t Pm = m * P;
        uint64_t       k  = 0;
        while (k < Pm && q->addr[(i - k) % W] == q->addr[(i - k - Pm) % W]) {
            k++;
        }
        if (k == Pm) {
            return Pm;
        }
    }
    return 0;
}

/* Sets the template from the last `period` calls; the current call takes the slot of the call
 * one period back.  \return that slot, or NULL when out of memory. */
static sqz_seq_slot_t *sqz_seq_establish(sqz_callseq_t *q, uint64_t period)
{
    if (period > q->tmplcap) {
        uint32_t *t = realloc(q->tmpl, period * sizeof(*t));
        if (NULL == t) {
            return NULL;
        }
        q->tmpl    = t;
        q->tmplcap = period;
    }
    const uint64_t i = q->n - 1;
    for (uint64_t j = 0; j < period; j++) {
        /* Position j holds the latest call of that position: i - period + 1 + j, except the
         * current call's position, whose latest instance before now is i - period. */
        const uint64_t  c = (j + 1 < period) ? i - period + 1 + j : i - period;
        sqz_seq_slot_t *r = sqz_callseq_slot(q, q->slot[c % W]);
        if (NULL == r) {
            return NULL; /* (cannot happen: the horizon keeps them) */
        }
        r->pinned  = 1;
        q->tmpl[j] = (uint32_t)sqz_seq_index(r->id);
    }
    q->period   = period;
    q->cursor   = 0;
    q->stable   = 0;
    q->irr_seen = 0;
    q->irr_win  = 0;
    return &q->rec[q->tmpl[period - 1]];
}

static void sqz_seq_unpin(sqz_callseq_t *q)
{
    for (uint64_t j = 0; j < q->period; j++) {
        q->rec[q->tmpl[j]].pinned = 0;
    }
    q->period = 0;
}

/* ---------------------------------------------------------------------------------------------
 * Placing calls
 * ------------------------------------------------------------------------------------------- */
static void sqz_seq_append(sqz_callseq_t *q, uint64_t sig, uintptr_t addr)
{
    const uint64_t i = q->n++;
    q->sig[i % W]    = sig;
    q->addr[i % W]   = addr;
    q->slot[i % W]   = 0;
    if (q->n - q->episode > W) {
        q->episode = q->n - W;
    }
}

/* Takes the call on `r` (already chosen): counters, hint, and the history entry. */
static void sqz_seq_take(sqz_callseq_t *q, sqz_seq_slot_t *r, uintptr_t addr, int fresh,
                         sqz_seq_place_t *out)
{
    out->slot            = r;
    out->seq             = r->calls++;
    out->fresh           = fresh;
    if (fresh) {
        sqz_seq_kin(q, r, addr, out);
        q->heirs += 0 != out->heir_of;
    }
    out->moved_ambiguous = !fresh && q->drop_moved && 0 != r->addr && r->addr != addr;
    r->last_use          = q->n - 1;
    r->addr              = addr;
    q->slot[(q->n - 1) % W] = r->id;
}

/* A fresh slot for the current call (learning, or an irregular signature seen first). */
static sqz_status_t sqz_seq_take_new(sqz_callseq_t *q, uint64_t sig, uint64_t before,
                                     uintptr_t addr, int irregular, sqz_seq_place_t *out)
{
    sqz_seq_slot_t *r = sqz_seq_new(q, sig, before, irregular);
    if (NULL == r) {
        return SQZ_ERR_NO_MEMORY;
    }
    sqz_seq_take(q, r, addr, 1, out);
    return SQZ_OK;
}

/* Counts the template's misses over a window of max(64, 4 P) calls: more than one in 32 ends the
 * template (the pattern changed, or it was a wrong guess that still matches most calls).
 * \return 1 when it ends. */
static int sqz_seq_missed(sqz_callseq_t *q, int miss)
{
    const uint64_t win = 4 * q->period > 64 ? 4 * q->period : 64;
    if (++q->irr_seen > win) {
        q->irr_seen = 1;
        q->irr_win  = 0;
    }
    q->irr_win += (uint64_t)miss;
    return q->irr_win > 1 && 32 * q->irr_win > win;
}

/* A confirmed template knows every rank's buffers stay put: a call whose address is not the one
 * its template entry last saw, but another entry's of its signature, is that entry (a call of
 * the step was skipped or added, which equal signatures cannot show).  \return how far ahead of
 * the cursor that entry is (0: the cursor's). */
static uint64_t sqz_seq_realign(const sqz_callseq_t *q, uint64_t sig, uintptr_t addr)
{
    const uint64_t        P = q->period;
    const sqz_seq_slot_t *r = &q->rec[q->tmpl[q->cursor]];
    if (r->sig != sig || 0 == r->addr || r->addr == addr) {
        return 0;
    }
    for (uint64_t k = 1; k < P; k++) {
        const sqz_seq_slot_t *e = &q->rec[q->tmpl[(q->cursor + k) % P]];
        if (e->sig == sig && e->addr == addr) {
            return k;
        }
    }
    return 0; /* moved: the same buffer at a new address */
}

/* Steady state: the template entry under the cursor, the one after it (a call skipped), or the
 * irregular slot of the signature.  \return SQZ_ERR_NOT_SUPPORTED when the template ends. */
static sqz_status_t sqz_seq_follow(sqz_callseq_t *q, uint64_t sig, uint64_t before,
                                   uintptr_t addr, sqz_seq_place_t *out)
{
    const uint64_t P    = q->period;
    const uint64_t skip0 = q->confirmed ? sqz_seq_realign(q, sig, addr) : 0;
    for (uint64_t skip = skip0; skip < skip0 + 2 && skip < P; skip++) {
        sqz_seq_slot_t *r = &q->rec[q->tmpl[(q->cursor + skip) % P]];
        if (r->sig != sig) {
            continue;
        }
        if (sqz_seq_missed(q, skip != 0)) {
            sqz_seq_unpin(q); /* learn again */
            return SQZ_ERR_NOT_SUPPORTED;
        }
        q->cursor = (q->cursor + skip + 1) % P;
        if (++q->stable >= 4 * P && q->n - q->episode > 4 * P) {
            q->episode = q->n - 4 * P; /* a pattern this stable is the one to outweigh */
        }
        sqz_seq_take(q, r, addr, 0, out);
        return SQZ_OK;
    }
    if (sqz_seq_missed(q, 1)) {
        sqz_seq_unpin(q);
        return SQZ_ERR_NOT_SUPPORTED;
    }
    for (size_t j = 0; j < q->nrec; j++) {
        if (0 != q->rec[j].id && q->irreg[j] && q->rec[j].sig == sig) {
            sqz_seq_take(q, &q->rec[j], addr, 0, out);
            return SQZ_OK;
        }
    }
    return sqz_seq_take_new(q, sig, before, addr, 1, out);
}

sqz_status_t sqz_callseq_place(sqz_callseq_t *q, uint64_t sig, uintptr_t addr,
                               sqz_seq_place_t *out)
{
    memset(out, 0, sizeof(*out));
    const uint64_t before = sqz_seq_occ_bump(q, sig);
    if (UINT64_MAX == before) {
        return SQZ_ERR_NO_MEMORY;
    }
    sqz_seq_append(q, sig, addr);
    sqz_status_t st = SQZ_ERR_NOT_SUPPORTED;
    if (q->period) {
        st = sqz_seq_follow(q, sig, before, addr, out);
    }
    if (SQZ_ERR_NOT_SUPPORTED == st) {
        uint64_t       run = 0;
        const uint64_t P   = sqz_seq_find_period(q, &run);
        if (P) {
            q->pending        = 1;
            q->pending_period = P;
            q->pending_run    = run;
            q->pending_before = before;
            out->refine       = 1;
            out->local_period = sqz_seq_confirm(q, P, run);
            return SQZ_OK;
        }
        st = sqz_seq_take_new(q, sig, before, addr, 0, out);
    }
    if (SQZ_OK != st) {
        sqz_callseq_reset(q);
    }
    return st;
}

/* Learning with period P proposed and waiting for evidence: dooms the oldest learning slots of
 * the current call's signature beyond twice its calls in one period P.  From signatures alone
 * (the same on every rank).  A stable buffer loses nothing: its fresh slots took their
 * predecessors' state over by address, and the oldest slots dooming picks are those emptied. */
static void sqz_seq_budget(sqz_callseq_t *q, uint64_t P, sqz_seq_place_t *out)
{
    const uint64_t i = q->n - 1, sig = sqz_seq_sig_at(q, i);
    uint64_t       per = 0, live = 0;
    for (uint64_t k = 0; k < P; k++) {
        per += sqz_seq_sig_at(q, i - k) == sig;
    }
    for (size_t j = 0; j < q->nrec; j++) {
        live += 0 != q->rec[j].id && q->rec[j].sig == sig && !q->irreg[j] && !q->rec[j].doomed;
    }
    while (live > 2 * per) {
        sqz_seq_slot_t *old = NULL;
        for (size_t j = 0; j < q->nrec; j++) {
            sqz_seq_slot_t *r = &q->rec[j];
            if (0 != r->id && r->sig == sig && !q->irreg[j] && !r->doomed && !r->pinned &&
                (NULL == old || r->last_use < old->last_use)) {
                old = r;
            }
        }
        if (NULL == old) {
            break;
        }
        old->doomed      = 1;
        out->established = 1; /* (asks for the sweep) */
        live--;
    }
}

sqz_status_t sqz_callseq_refine(sqz_callseq_t *q, uint64_t agreed, sqz_seq_place_t *out)
{
    if (!q->pending) {
        return SQZ_ERR_INTERNAL;
    }
    q->pending           = 0;
    const uint64_t  P    = q->pending_period;
    const uintptr_t addr = q->addr[(q->n - 1) % W];
    const uint64_t  sig  = q->sig[(q->n - 1) % W];
    const int       ok   = agreed >= P && 0 == agreed % P && 2 * agreed <= q->pending_run;
    out->refine          = 0;
    if (!ok && q->pending_run < SQZ_SEQ_MIN_EVIDENCE) {
        /* Not confirmed by every rank's addresses, and too few calls to take it on signatures
         * alone: keep learning, with the counter of the call one proposed period back (agreed,
         * and the buffer's own when the proposal is right: a buffer keeps counting). */
        const sqz_seq_slot_t *back  = sqz_callseq_slot(q, q->slot[(q->n - 1 - P) % W]);
        const uint64_t        calls = back ? back->calls : q->pending_before;
        const sqz_status_t st = sqz_seq_take_new(q, sig, calls, addr, 0, out);
        if (SQZ_OK == st) {
            /* On every rank alike, whatever its addresses: which records are freed decides the
             * ids of the next slots, which must be the same everywhere (a rank whose allocator
             * once handed back an address must not keep more slots than the others). */
            sqz_seq_budget(q, P, out);
        }
        return st;
    }
    const uint64_t  mine = sqz_seq_confirm(q, P, q->pending_run);
    const uint64_t  Pa   = ok ? agreed : P;
    q->drop_moved        = mine != Pa && 0 != mine;
    q->confirmed         = ok;
    sqz_seq_slot_t *r    = sqz_seq_establish(q, Pa);
    if (NULL == r) {
        sqz_callseq_reset(q);
        return SQZ_ERR_NO_MEMORY;
    }
    sqz_seq_take(q, r, addr, 0, out);
    out->established = 1;
    return SQZ_OK;
}

uint64_t sqz_callseq_now(const sqz_callseq_t *q) { return q->n; }

uint64_t sqz_callseq_period(const sqz_callseq_t *q) { return q->period; }

size_t sqz_callseq_live(const sqz_callseq_t *q)
{
    size_t n = 0;
    for (size_t j = 0; j < q->nrec; j++) {
        n += 0 != q->rec[j].id;
    }
    return n;
}

uint64_t sqz_callseq_horizon(const sqz_callseq_t *q)
{
    const uint64_t h = q->period ? 2 * q->period : sqz_seq_episode_len(q) / 2 + 2;
    return h > 64 ? h : 64;
}

size_t sqz_callseq_evict(sqz_callseq_t *q, void (*fn)(void *arg, uint64_t id), void *arg)
{
    const uint64_t horizon = sqz_callseq_horizon(q);
    size_t         n       = 0;
    for (size_t j = 0; j < q->nrec; j++) {
        sqz_seq_slot_t *r = &q->rec[j];
        /* Under a template, a slot of the learning phase that it did not take is garbage. */
        const int stale = r->last_use + horizon < q->n || (q->period && !q->irreg[j]) || r->doomed;
        if (0 != r->id && !r->pinned && !q->pending && stale) {
            fn(arg, r->id);
            memset(r, 0, sizeof(*r));
            n++;
        }
    }
    while (q->nrec > 0 && 0 == q->rec[q->nrec - 1].id) {
        q->nrec--;
    }
    return n;
}

void sqz_callseq_reset(sqz_callseq_t *q)
{
    if (q->period) {
        sqz_seq_unpin(q);
    }
    q->pending    = 0;
    q->drop_moved = 0;
    q->confirmed  = 0;
    q->heirs      = 0;
    q->episode    = q->n;
}

sqz_callseq_t *sqz_callseq_create(void) { return calloc(1, sizeof(sqz_callseq_t)); }

void sqz_callseq_destroy(sqz_callseq_t *q)
{
    if (q) {
        free(q->tmpl);
        free(q->rec);
        free(q->irreg);
        free(q->occ_sig);
        free(q->occ_n);
        free(q);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Checkpoints.  Addresses are not saved: they mean nothing in another process (a restored slot
 * has no address hint until its next call).
 * ------------------------------------------------------------------------------------------- */
typedef struct sqz_seq_header {
    uint64_t n, episode, period, cursor, stable, irr_seen, irr_win;
    uint64_t pending_period, pending_run, pending_before, generation, nrec, capocc, nocc, heirs;
    int32_t  drop_moved, pending, confirmed, pad;
} sqz_seq_header_t;

/* The arrays after the header, in order: {pointer, bytes} for a tracker with header h. */
static size_t sqz_seq_arrays(sqz_callseq_t *q, const sqz_seq_header_t *h, void **ptr,
                             size_t *bytes)
{
    void *const  p[] = {q->sig, q->slot, q->tmpl, q->rec, q->irreg, q->occ_sig, q->occ_n};
    const size_t b[] = {W * sizeof(uint64_t), W * sizeof(uint64_t), h->period * sizeof(uint32_t),
                        h->nrec * sizeof(sqz_seq_slot_t), h->nrec, h->capocc * sizeof(uint64_t),
                        h->capocc * sizeof(uint64_t)};
    size_t       total = sizeof(*h);
    for (size_t k = 0; k < sizeof(b) / sizeof(b[0]); k++) {
        ptr[k]   = p[k];
        bytes[k] = b[k];
        total += b[k];
    }
    return total;
}

size_t sqz_callseq_save(const sqz_callseq_t *q, void *buf, size_t len)
{
    const sqz_seq_header_t h = {
        q->n, q->episode, q->period, q->cursor, q->stable, q->irr_seen, q->irr_win,
        q->pending_period, q->pending_run, q->pending_before, q->generation, q->nrec,
        q->capocc, q->nocc, q->heirs, q->drop_moved, q->pending, q->confirmed, 0};
    void        *ptr[7];
    size_t       bytes[7];
    const size_t need = sqz_seq_arrays((sqz_callseq_t *)q, &h, ptr, bytes);
    if (NULL == buf || len < need) {
        return need;
    }
    unsigned char *p = buf;
    memcpy(p, &h, sizeof(h));
    p += sizeof(h);
    for (size_t k = 0; k < 7; k++) {
        if (bytes[k]) {
            memcpy(p, ptr[k], bytes[k]);
        }
        p += bytes[k];
    }
    return need;
}

/* Checks what a loaded tracker refers to, and clears its address hints (no address survives
 * the process that saved it). */
static int sqz_seq_valid(const sqz_callseq_t *t)
{
    if (t->cursor >= (t->period ? t->period : 1) || t->nocc * 2 > t->capocc ||
        (t->capocc & (t->capocc - 1))) {
        return 0;
    }
    for (uint64_t j = 0; j < t->period; j++) {
        if (t->tmpl[j] >= t->nrec || 0 == t->rec[t->tmpl[j]].id) {
            return 0;
        }
    }
    for (uint64_t j = 0; j < t->nrec; j++) {
        t->rec[j].addr = 0;
    }
    return 1;
}

sqz_status_t sqz_callseq_load(const void *buf, size_t len, sqz_callseq_t **out)
{
    sqz_seq_header_t h;
    if (len < sizeof(h)) {
        return SQZ_ERR_CORRUPT;
    }
    memcpy(&h, buf, sizeof(h));
    if (h.period > W || h.nrec > ((uint64_t)1 << 31) || h.capocc > ((uint64_t)1 << 31)) {
        return SQZ_ERR_CORRUPT;
    }
    sqz_callseq_t *t = sqz_callseq_create();
    if (NULL == t) {
        return SQZ_ERR_NO_MEMORY;
    }
    t->tmpl    = malloc(h.period ? h.period * sizeof(uint32_t) : 1);
    t->rec     = malloc(h.nrec ? h.nrec * sizeof(sqz_seq_slot_t) : 1);
    t->irreg   = malloc(h.nrec ? h.nrec : 1);
    t->occ_sig = malloc(h.capocc ? h.capocc * sizeof(uint64_t) : 1);
    t->occ_n   = malloc(h.capocc ? h.capocc * sizeof(uint64_t) : 1);
    void  *ptr[7];
    size_t bytes[7];
    if (!t->tmpl || !t->rec || !t->irreg || !t->occ_sig || !t->occ_n ||
        len != sqz_seq_arrays(t, &h, ptr, bytes)) {
        sqz_callseq_destroy(t);
        return len == sizeof(h) ? SQZ_ERR_NO_MEMORY : SQZ_ERR_CORRUPT;
    }
    const unsigned char *p = (const unsigned char *)buf + sizeof(h);
    for (size_t k = 0; k < 7; k++) {
        memcpy(ptr[k], p, bytes[k]);
        p += bytes[k];
    }
    t->n = h.n, t->episode = h.episode, t->period = h.period, t->cursor = h.cursor;
    t->stable = h.stable, t->irr_seen = h.irr_seen, t->irr_win = h.irr_win;
    t->pending_period = h.pending_period, t->pending_run = h.pending_run;
    t->pending_before = h.pending_before, t->generation = h.generation;
    t->nrec = t->caprec = h.nrec, t->tmplcap = h.period, t->capocc = h.capocc, t->nocc = h.nocc;
    t->drop_moved = h.drop_moved, t->pending = h.pending, t->confirmed = h.confirmed;
    t->heirs = h.heirs;
    if (!sqz_seq_valid(t)) {
        sqz_callseq_destroy(t);
        return SQZ_ERR_CORRUPT;
    }
    *out = t;
    return SQZ_OK;
}
