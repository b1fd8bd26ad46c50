/* crashpoint — a TEST HOOK: dies by SIGKILL at a named point of the pipeline, so the chaos
 * tests can crash the daemon exactly at a step boundary (tests/integration/test_chaos.sh).
 *
 * Off unless the environment variable CARTGATE_TEST_CRASH_AT is set (never set it in
 * production): "NAME" dies the first time point NAME is reached, "NAME:N" the N-th time.
 * The points:
 *   screen.proposed   a patient's verdict and proposal are written, the batch not committed
 *   screen.committed  a screening batch (verdicts + proposals) has just committed
 *   poll.page         a search page is stored in the poll's ingest group, committed or not
 *                     (a crash loses the uncommitted pages; no cursor has moved: refetched)
 *   sender.posted     a center answered 200 to a referral, not yet recorded as sent
 *   intake.writing    (a center) a received Bundle is written, its transaction not committed
 *   intake.stored     (a center) a received Bundle has committed, the site not yet answered
 * The variable is read once; reaching a point costs a string comparison. */
#ifndef CRASHPOINT_H
#define CRASHPOINT_H

/* Raises SIGKILL when `name` is the configured point and its count is reached. */
void crashpoint(const char *name);

#endif
