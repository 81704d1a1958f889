package e2e

import (
	"database/sql"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// MemberHistory is what a warehouse's group_member table must hold for
// one source and Group: the stays a sequence of membership snapshots
// (one per committed run) implies.
type MemberHistory struct {
	stays []stay
	open  map[string]int // patient -> index of its open stay
}

type stay struct {
	patient      string
	joined, left time.Time
}

// Clone returns an independent copy.
func (h *MemberHistory) Clone() MemberHistory {
	return MemberHistory{stays: slices.Clone(h.stays), open: maps.Clone(h.open)}
}

// Observe applies the membership of a committed run with the given
// transactionTime: listed patients without an open stay join, open stays
// of patients no longer listed close.
func (h *MemberHistory) Observe(patients []string, at time.Time) {
	if h.open == nil {
		h.open = map[string]int{}
	}
	for p, i := range h.open {
		if !slices.Contains(patients, p) {
			h.stays[i].left = at
			delete(h.open, p)
		}
	}
	for _, p := range patients {
		if _, ok := h.open[p]; !ok {
			h.open[p] = len(h.stays)
			h.stays = append(h.stays, stay{patient: p, joined: at})
		}
	}
}

// Rows renders the history as RequireMembers compares it.
func (h *MemberHistory) Rows() []string {
	out := []string{}
	for _, s := range h.stays {
		out = append(out, stayRow(s.patient, s.joined, s.left))
	}
	slices.Sort(out)
	return out
}

// OpenAt counts the stays open at time at.
func (h *MemberHistory) OpenAt(at time.Time) int {
	n := 0
	for _, s := range h.stays {
		if !s.joined.After(at) && (s.left.IsZero() || s.left.After(at)) {
			n++
		}
	}
	return n
}

// Former lists the patients with closed stays and no open one, sorted.
func (h *MemberHistory) Former() []string {
	var out []string
	for _, s := range h.stays {
		if _, open := h.open[s.patient]; !open && !s.left.IsZero() && !slices.Contains(out, s.patient) {
			out = append(out, s.patient)
		}
	}
	slices.Sort(out)
	return out
}

// Current lists the patients with an open stay, sorted.
func (h *MemberHistory) Current() []string {
	var out []string
	for p := range h.open {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

func stayRow(patient string, joined, left time.Time) string {
	l := "-"
	if !left.IsZero() {
		l = left.UTC().Format(time.RFC3339Nano)
	}
	return fmt.Sprintf("%s|%s|%s", patient, joined.UTC().Format(time.RFC3339Nano), l)
}

// RequireMembers compares a warehouse's group_member rows of one source
// and Group with a history, and current_member with its open stays; both
// joined_run and left_run must name a runs row of the source.
func RequireMembers(t testing.TB, db *sql.DB, source, group string, want *MemberHistory) {
	t.Helper()
	rows, err := db.Query(`SELECT m.patient_id, m.joined_at, m.left_at,
			m.joined_run IN (SELECT run_id FROM runs WHERE source = $1),
			m.left_run IS NULL OR m.left_run IN (SELECT run_id FROM runs WHERE source = $1)
		FROM group_member m WHERE m.source = $1 AND m.group_id = $2`, source, group)
	require.NoError(t, err)
	defer func() { _ = rows.Close() }()
	got := []string{}
	for rows.Next() {
		var p string
		var joined time.Time
		var left sql.NullTime
		var jr, lr bool
		require.NoError(t, rows.Scan(&p, &joined, &left, &jr, &lr))
		require.True(t, jr && lr, "%s: its stay names a run that is not in runs", p)
		got = append(got, stayRow(p, joined, left.Time))
	}
	require.NoError(t, rows.Err())
	slices.Sort(got)
	require.Equal(t, want.Rows(), got, "group_member of %s, Group/%s", source, group)

	var cur []string
	rows2, err := db.Query(`SELECT patient_id FROM current_member WHERE source = $1 AND group_id = $2`, source, group)
	require.NoError(t, err)
	defer func() { _ = rows2.Close() }()
	for rows2.Next() {
		var p string
		require.NoError(t, rows2.Scan(&p))
		cur = append(cur, p)
	}
	require.NoError(t, rows2.Err())
	slices.Sort(cur) // in Go: a database's collation may order ids otherwise
	require.Equal(t, want.Current(), cur, "current_member of %s, Group/%s", source, group)
}

// RunMembership is the runs table's membership column of a run.
func RunMembership(t testing.TB, db *sql.DB, runID string) string {
	t.Helper()
	var m sql.NullString
	require.NoError(t, db.QueryRow(`SELECT membership FROM runs WHERE run_id = $1 AND outcome = 'success'`, runID).Scan(&m))
	return m.String
}
