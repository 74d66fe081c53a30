/* L-GreCo's dynamic program (Alimohammadi, Markov, Frantar, Alistarh, MLSys 2024): per layer, the
 * candidate setting that minimizes the total bytes on the wire subject to a total compression
 * error at most a budget (the error of the uniform default setting). */
#ifndef SQZ_LGRECO_H
#define SQZ_LGRECO_H

#include <stddef.h>

#include <squeeze.h>

/** Solves  min sum_l bytes[l][c_l]  s.t.  sum_l err[l][c_l] <= budget  over c_l in [0, ncand).
 *  bytes and err are nlayers x ncand, row-major, >= 0 and finite.
 *  The program runs over the bytes axis: it cuts sum_l max_c bytes[l][c] into about `bins` bins,
 *  rounds each layer's bytes UP to whole bins, and finds for every byte count b the least total
 *  error E(b); the answer is the smallest b with E(b) <= budget.  The error side is exact, so
 *  the answer never exceeds the budget, and any choice within it (the uniform setting whose
 *  error is the budget, in particular) is found: the bytes can miss the optimum only by the
 *  rounding, at most nlayers bins.  Among equal bytes the least error wins, then the lower
 *  candidate index: the result is a deterministic function of the inputs, so ranks that solve
 *  the same inputs agree.  O(nlayers * ncand * (bins + nlayers)) time.
 *  \return SQZ_OK with choice[l] set (and *total_bytes, *total_err when not NULL), or
 *  SQZ_ERR_NOT_SUPPORTED when no choice fits the budget (choice untouched), SQZ_ERR_NO_MEMORY,
 *  SQZ_ERR_INVALID_PARAM for bad arguments. */
sqz_status_t sqz_lgreco_solve(size_t nlayers, size_t ncand, const double *bytes, const double *err,
                              double budget, size_t bins, int *choice, double *total_bytes,
                              double *total_err);

/** The dual problem on the same program:  min sum_l err[l][c_l]  s.t.  sum_l bytes[l][c_l] <=
 *  max_bytes.  Bytes are rounded up to whole bins, so the answer never exceeds max_bytes; its
 *  error can miss the optimum only by what the rounding hides.  \return as sqz_lgreco_solve
 *  (SQZ_ERR_NOT_SUPPORTED when even the cheapest choice exceeds max_bytes). */
sqz_status_t sqz_lgreco_solve_bytes(size_t nlayers, size_t ncand, const double *bytes,
                                    const double *err, double max_bytes, size_t bins, int *choice,
                                    double *total_bytes, double *total_err);

#endif
