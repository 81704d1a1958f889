package e2e_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks/duckdb"
	"github.com/fhirferry/fhirferry/transform"
)

// testViews are the views the end-to-end tests load: the default pack.
func testViews(t *testing.T) []transform.View {
	t.Helper()
	views, err := transform.LoadViews(true, "")
	require.NoError(t, err)
	require.NotEmpty(t, views)
	return views
}

// oneRowPerResource are default views with exactly one row per resource.
var oneRowPerResource = map[string]bool{"patient": true, "observation": true, "encounter": true, "condition": true}

// assertViewsFollowRaw checks that no view row outlives its resource, and
// that one-row-per-resource views hold exactly the current resources.
func assertViewsFollowRaw(t *testing.T, s *duckdb.Sink, tables []*schemas.Table) {
	t.Helper()
	checked := 0
	for _, tb := range tables {
		if tb.Kind != schemas.KindView {
			continue
		}
		var orphans int
		q := fmt.Sprintf(`SELECT count(*) FROM %q v WHERE NOT EXISTS (
			SELECT 1 FROM fhir_resources r WHERE r.resource_type = ? AND r.id = v._resource_id)`, tb.Name)
		require.NoError(t, s.DB().QueryRow(q, tb.ResourceType).Scan(&orphans))
		require.Zero(t, orphans, "view %s has rows of resources that are not current", tb.Name)
		if !oneRowPerResource[tb.Name] {
			continue
		}
		var viewRows, distinct, raw int
		require.NoError(t, s.DB().QueryRow(fmt.Sprintf(`SELECT count(*), count(DISTINCT _resource_id) FROM %q`, tb.Name)).Scan(&viewRows, &distinct))
		require.NoError(t, s.DB().QueryRow(`SELECT count(*) FROM fhir_resources WHERE resource_type = ?`, tb.ResourceType).Scan(&raw))
		require.Equal(t, raw, viewRows, "view %s: one row per current %s", tb.Name, tb.ResourceType)
		require.Equal(t, raw, distinct, "view %s: no duplicate resource rows", tb.Name)
		checked++
	}
	require.Equal(t, len(oneRowPerResource), checked)
}
