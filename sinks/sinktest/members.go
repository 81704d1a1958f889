package sinktest

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
)

// members reads group_member (or current_member) through the sink's SQL,
// the way an analyst does: "source|group|patient|joined_run|left_run" with
// the joined_at and left_at instants checked against at, the instant of
// each run.
func (e *env) members(table string, at map[string]time.Time) []string {
	e.t.Helper()
	q := e.querier()
	left := "left_run, left_at"
	if table == schemas.CurrentMemberView {
		left = "NULL, NULL"
	}
	rows, err := q.Query(e.ctx, fmt.Sprintf(`SELECT namespace, source, group_id, patient_id, joined_run, joined_at, %s FROM %s`, left, table))
	require.NoError(e.t, err)
	defer func() { _ = rows.Close() }()
	var out []string
	for rows.Next() {
		var ns, src, g, p, jr string
		var lr *string
		var ja time.Time
		var la *time.Time
		require.NoError(e.t, rows.Scan(&ns, &src, &g, &p, &jr, &ja, &lr, &la))
		require.Equal(e.t, Namespace, ns)
		require.True(e.t, ja.Equal(at[jr]), "%s joined_at %s, want %s (run %s)", p, ja, at[jr], jr)
		l := "NULL"
		if lr != nil {
			l = *lr
			require.NotNil(e.t, la)
			require.True(e.t, la.Equal(at[l]), "%s left_at %s, want %s", p, *la, at[l])
		}
		out = append(out, fmt.Sprintf("%s|%s|%s|%s|%s", src, g, p, jr, l))
	}
	require.NoError(e.t, rows.Err())
	slices.Sort(out)
	if out == nil {
		out = []string{}
	}
	return out
}

// query runs a one-column query through the sink's SQL reader.
func (e *env) query(sql string) []string {
	e.t.Helper()
	q := e.querier()
	rows, err := q.Query(e.ctx, sql)
	require.NoError(e.t, err)
	defer func() { _ = rows.Close() }()
	var out []string
	for rows.Next() {
		var v string
		require.NoError(e.t, rows.Scan(&v))
		out = append(out, v)
	}
	require.NoError(e.t, rows.Err())
	return out
}

// caseGroupMembership: each run's membership opens stays for newcomers and
// closes those of leavers; a rejoin is a second stay; a run that did not
// learn the membership, and one that failed, change nothing; sources and
// Groups keep their own rows.
func caseGroupMembership(t *testing.T, e *env, _ Harness) {
	at := map[string]time.Time{}
	apply := func(source, group string, patients ...string) string {
		t.Helper()
		run := e.runOf(source, Namespace, fmt.Sprintf("m%d", e.n+1), tt1)
		var m *sinks.Membership
		from := ""
		if group != "" {
			at[run.RunID] = T(e.n)
			m = &sinks.Membership{Group: group, Patients: patients, At: T(e.n)}
			from = "group read"
		}
		txn := e.write(run, e.rawB(e.pat(fmt.Sprintf("p%d", e.n), "1", T(1), 1)))
		require.NoError(t, txn.Commit(e.ctx, sinks.RunSummary{Finished: Base, Outcome: "success", Membership: m, MembersFrom: from}))
		require.Equal(t, []string{cmp.Or(from, "NULL")}, e.query(`SELECT coalesce(membership, 'NULL') FROM runs WHERE run_id = '`+run.RunID+`'`),
			"the runs row says how the run learnt its members")
		return run.RunID
	}
	r1 := apply("cohort", "g1", "a", "b")
	require.Equal(t, []string{"cohort|g1|a|" + r1 + "|NULL", "cohort|g1|b|" + r1 + "|NULL"}, e.members(schemas.GroupMemberTable, at))
	r2 := apply("cohort", "g1", "b", "c")
	r3 := apply("cohort", "g1", "a", "c")
	want := []string{
		"cohort|g1|a|" + r1 + "|" + r2,
		"cohort|g1|a|" + r3 + "|NULL",
		"cohort|g1|b|" + r1 + "|" + r3,
		"cohort|g1|c|" + r2 + "|NULL",
	}
	require.Equal(t, want, e.members(schemas.GroupMemberTable, at), "a leaver's stay closes; a rejoin opens a second one")
	require.Equal(t, []string{"cohort|g1|a|" + r3 + "|NULL", "cohort|g1|c|" + r2 + "|NULL"}, e.members(schemas.CurrentMemberView, at))

	apply("cohort", "") // no membership learnt: nobody left
	ctx, cancel := context.WithCancel(e.ctx)
	run := e.runOf("cohort", Namespace, "failed", tt2)
	txn := e.write(run, e.rawB(e.pat("px", "1", T(1), 1)))
	cancel()
	require.Error(t, txn.Commit(ctx, sinks.RunSummary{Outcome: "success", Membership: &sinks.Membership{Group: "g1", At: T(9)}}))
	require.NoError(t, txn.Rollback(e.ctx))
	require.Equal(t, want, e.members(schemas.GroupMemberTable, at), "a failed run changes no membership")

	// Another source of the same Group id and another Group of the
	// source are other cohorts.
	r6 := apply("other", "g1", "z")
	r7 := apply("cohort", "g2", "a")
	r8 := apply("cohort", "g1") // the Group emptied
	want = []string{
		"cohort|g1|a|" + r1 + "|" + r2,
		"cohort|g1|a|" + r3 + "|" + r8,
		"cohort|g1|b|" + r1 + "|" + r3,
		"cohort|g1|c|" + r2 + "|" + r8,
		"cohort|g2|a|" + r7 + "|NULL",
		"other|g1|z|" + r6 + "|NULL",
	}
	require.Equal(t, want, e.members(schemas.GroupMemberTable, at))
}

// querier is the sink's SQL reader, which these checks read through.
func (e *env) querier() sinks.Querier {
	e.t.Helper()
	q, ok := e.s.(sinks.Querier)
	require.True(e.t, ok, "the sink has no SQL reader")
	return q
}
