package e2e_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/cmd/internal/e2e"
	"github.com/fhirferry/fhirferry/fetch"
	"github.com/fhirferry/fhirferry/fetch/bulktest"
	"github.com/fhirferry/fhirferry/transform"
)

// TestLineOverTheLimitIsRejectedNotFatal: a resource line longer than
// max_line_bytes neither fails the run nor is held in memory: it becomes a
// reject naming its file and line, and every other resource of the run,
// those after it in the same file included, is committed.
func TestLineOverTheLimitIsRejectedNotFatal(t *testing.T) {
	const limit = 1 << 20
	h := newHarness(t, bulktest.Options{Patients: 6, Seed: 9, FileMaxResources: 40, Faults: bulktest.Faults{VeryLongLine: 3 << 20}}, "system", "")
	c, err := fetch.New(fetch.Options{BaseURL: h.srv.BaseURL(), MinWait: 5 * time.Millisecond, MaxWait: 100 * time.Millisecond,
		Parallel: 3, MaxLineBytes: limit})
	require.NoError(t, err)
	eng, err := transform.New(transform.Options{Views: h.views, BatchRows: 500, MaxLineBytes: limit})
	require.NoError(t, err)
	h.runner.Client, h.runner.Engine = c, eng

	res := h.run(t)
	require.EqualValues(t, 1, res.Stats.Rejects)

	var file, reason string
	var line int64
	require.NoError(t, h.sink.DB().QueryRowContext(context.Background(),
		"SELECT file, line, reason FROM rejects").Scan(&file, &line, &reason))
	require.NotEmpty(t, file)
	require.EqualValues(t, 1, line, "the fault puts the long resource first in its file")
	require.Contains(t, reason, "max_line_bytes")

	// The rest of the run is there: the truth without the one rejected
	// resource, which is the first line of the rejected file.
	truth := h.srv.Truth("system", "", nil)
	var n int
	require.NoError(t, h.sink.DB().QueryRowContext(context.Background(), "SELECT count(*) FROM fhir_resources").Scan(&n))
	require.Equal(t, len(truth)-1, n)
	rows, err := h.sink.DB().QueryContext(context.Background(), "SELECT resource_type, id FROM fhir_resources")
	require.NoError(t, err)
	held := map[bulktest.Key]bool{}
	for rows.Next() {
		var k bulktest.Key
		require.NoError(t, rows.Scan(&k.Type, &k.ID))
		held[k] = true
	}
	require.NoError(t, rows.Err())
	for k := range truth {
		if !held[k] {
			delete(truth, k)
		}
	}
	require.Len(t, truth, n)
	e2e.RequireMatchesTruth(t, h.sink.DB(), h.views, truth)
}
