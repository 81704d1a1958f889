package e2e_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/cmd/internal/e2e"
	"github.com/fhirferry/fhirferry/fetch/bulktest"
	"github.com/fhirferry/fhirferry/pipeline"
	"github.com/fhirferry/fhirferry/sinks/builtin"
)

// analystQueries are the README's quick-start questions, verbatim: plain
// SQL on the default views, no casts.
var analystQueries = map[string]string{
	"gender": `SELECT gender, count(*) AS patients
FROM patient
GROUP BY gender
ORDER BY gender;`,
	"diabetes_a1c": `WITH latest_a1c AS (
  SELECT namespace, patient_id, value_quantity_value AS a1c,
         row_number() OVER (PARTITION BY namespace, patient_id ORDER BY effective_datetime DESC) AS n
  FROM observation
  WHERE code_system = 'http://loinc.org' AND code_code = '4548-4'
    AND effective_datetime >= now() - INTERVAL 1 YEAR
)
SELECT p.id AS patient_id, a.a1c
FROM patient p
JOIN latest_a1c a ON a.namespace = p.namespace AND a.patient_id = p.id AND a.n = 1
WHERE a.a1c > 9
  AND EXISTS (SELECT 1 FROM condition c
              WHERE c.namespace = p.namespace AND c.patient_id = p.id
                AND c.code_system = 'http://snomed.info/sct' AND c.code_code = '44054006')
ORDER BY p.id;`,
	"encounters_per_month": `SELECT strftime(date_trunc('month', period_start), '%Y-%m') AS month, count(*) AS encounters
FROM encounter
GROUP BY month
ORDER BY month;`,
	"bmi": `SELECT CASE WHEN value_quantity_value < 18.5 THEN 'underweight'
            WHEN value_quantity_value < 25 THEN 'normal'
            WHEN value_quantity_value < 30 THEN 'overweight'
            ELSE 'obese' END AS bmi_class,
       count(*) AS observations,
       round(avg(value_quantity_value), 1) AS mean_bmi
FROM observation
WHERE code_system = 'http://loinc.org' AND code_code = '39156-5'
GROUP BY bmi_class
ORDER BY min(value_quantity_value);`,
	"active_medications": `SELECT p.id AS patient_id, count(m.id) AS active_medications
FROM patient p
LEFT JOIN medication_request m
  ON m.namespace = p.namespace AND m.patient_id = p.id AND m.status = 'active'
GROUP BY p.id
ORDER BY p.id;`,
}

// TestAnalystQuickStart runs the README's analyst questions on the demo
// warehouse (after its initial and incremental runs, through the file
// analysts open) and checks each answer against one computed in Go from
// the server's current resources, without the views.
func TestAnalystQuickStart(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "..", "README.md"))
	require.NoError(t, err)
	space := regexp.MustCompile(`\s+`)
	for name, q := range analystQueries {
		require.True(t, strings.Contains(space.ReplaceAllString(string(readme), " "), space.ReplaceAllString(q, " ")),
			"README's quick start lacks query %s as the test runs it", name)
	}

	ctx := context.Background()
	d, err := pipeline.StartDemo(ctx, t.TempDir(), 100, pipeline.Deps{Sinks: builtin.Factories()})
	require.NoError(t, err)
	defer d.Close()
	_, err = d.Run(ctx)
	require.NoError(t, err)
	d.Advance()
	_, err = d.Run(ctx)
	require.NoError(t, err)
	now := time.Now()
	truth := parseTruth(t, d.Server.Truth("group", "cohort", nil))

	db := e2e.OpenDuckDB(t, d.Warehouse)
	// Months are the analyst's time zone's; the oracle counts in UTC.
	_, err = db.Exec(`SET TimeZone = 'UTC'`)
	require.NoError(t, err)
	got := func(name string) []string { return queryRows(t, db, analystQueries[name]) }

	require.Equal(t, truth.genders(), got("gender"))
	want := truth.poorlyControlledDiabetics(t, now)
	require.NotEmpty(t, want, "the demo data has a diabetic with a recent HbA1c over 9%: the question is exercised")
	require.Equal(t, want, got("diabetes_a1c"))
	require.Equal(t, truth.encountersPerMonth(t), got("encounters_per_month"))
	require.Equal(t, truth.bmiClasses(), got("bmi"))
	meds := truth.activeMedications()
	require.Equal(t, meds, got("active_medications"))
	require.True(t, slices.ContainsFunc(meds, func(s string) bool { return !strings.HasSuffix(s, "|0") }), "someone has an active medication")
}

func queryRows(t *testing.T, db *sql.DB, q string) []string {
	t.Helper()
	rows, err := db.Query(q)
	require.NoError(t, err, q)
	return scanRows(t, rows)
}

// scanRows reads and closes rows, each row's cells joined by "|".
func scanRows(t *testing.T, rows *sql.Rows) []string {
	t.Helper()
	defer rows.Close()
	cols, err := rows.Columns()
	require.NoError(t, err)
	var out []string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		require.NoError(t, rows.Scan(ptrs...))
		parts := make([]string, len(vals))
		for i, v := range vals {
			switch v := v.(type) {
			case float64:
				parts[i] = fmt.Sprintf("%.1f", v)
			default:
				parts[i] = fmt.Sprint(v)
			}
		}
		out = append(out, strings.Join(parts, "|"))
	}
	require.NoError(t, rows.Err())
	return out
}

// analystTruth is the current resources, decoded by hand.
type analystTruth struct {
	patients []fhirPatient
	conds    []fhirResource
	obs      []fhirResource
	encs     []fhirResource
	meds     []fhirResource
}

type fhirPatient struct{ ID, Gender string }

type coding struct{ System, Code string }

type fhirResource struct {
	ID      string
	Subject struct{ Reference string }
	Status  string
	Code    struct{ Coding []coding }
	// Observation
	EffectiveDateTime string
	ValueQuantity     *struct{ Value float64 }
	// Encounter
	Period struct{ Start string }
}

func (r fhirResource) patient() string { return strings.TrimPrefix(r.Subject.Reference, "Patient/") }

func (r fhirResource) coded(system, code string) bool {
	return slices.Contains(r.Code.Coding, coding{system, code})
}

func parseTruth(t *testing.T, truth map[bulktest.Key]bulktest.TruthRow) analystTruth {
	t.Helper()
	var a analystTruth
	for k, row := range truth {
		if k.Type == "Patient" {
			var p fhirPatient
			require.NoError(t, json.Unmarshal(row.JSON, &p))
			a.patients = append(a.patients, p)
			continue
		}
		var r fhirResource
		require.NoError(t, json.Unmarshal(row.JSON, &r))
		switch k.Type {
		case "Condition":
			a.conds = append(a.conds, r)
		case "Observation":
			a.obs = append(a.obs, r)
		case "Encounter":
			a.encs = append(a.encs, r)
		case "MedicationRequest":
			a.meds = append(a.meds, r)
		}
	}
	return a
}

func counted(m map[string]int) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, fmt.Sprintf("%s|%d", k, m[k]))
	}
	return out
}

func (a analystTruth) genders() []string {
	m := map[string]int{}
	for _, p := range a.patients {
		m[p.Gender]++
	}
	return counted(m)
}

func instant(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339Nano, s)
	require.NoError(t, err, "oracle: the generated data has full dateTimes")
	return v
}

func (a analystTruth) poorlyControlledDiabetics(t *testing.T, now time.Time) []string {
	diabetic := map[string]bool{}
	for _, c := range a.conds {
		if c.coded("http://snomed.info/sct", "44054006") {
			diabetic[c.patient()] = true
		}
	}
	type reading struct {
		at  time.Time
		val float64
	}
	latest := map[string]reading{}
	for _, o := range a.obs {
		if !o.coded("http://loinc.org", "4548-4") || o.ValueQuantity == nil {
			continue
		}
		at := instant(t, o.EffectiveDateTime)
		if at.Before(now.AddDate(-1, 0, 0)) {
			continue
		}
		if r, ok := latest[o.patient()]; !ok || at.After(r.at) {
			latest[o.patient()] = reading{at, o.ValueQuantity.Value}
		}
	}
	var out []string
	for p, r := range latest {
		if r.val > 9 && diabetic[p] {
			out = append(out, fmt.Sprintf("%s|%.1f", p, r.val))
		}
	}
	slices.Sort(out)
	return out
}

func (a analystTruth) encountersPerMonth(t *testing.T) []string {
	m := map[string]int{}
	for _, e := range a.encs {
		m[instant(t, e.Period.Start).UTC().Format("2006-01")]++
	}
	return counted(m)
}

func (a analystTruth) bmiClasses() []string {
	type agg struct {
		n        int
		sum, min float64
	}
	m := map[string]*agg{}
	for _, o := range a.obs {
		if !o.coded("http://loinc.org", "39156-5") || o.ValueQuantity == nil {
			continue
		}
		v := o.ValueQuantity.Value
		class := "obese"
		switch {
		case v < 18.5:
			class = "underweight"
		case v < 25:
			class = "normal"
		case v < 30:
			class = "overweight"
		}
		g := m[class]
		if g == nil {
			g = &agg{min: v}
			m[class] = g
		}
		g.n++
		g.sum += v
		g.min = min(g.min, v)
	}
	classes := slices.SortedFunc(maps.Keys(m), func(x, y string) int {
		if m[x].min < m[y].min {
			return -1
		}
		return 1
	})
	var out []string
	for _, c := range classes {
		out = append(out, fmt.Sprintf("%s|%d|%.1f", c, m[c].n, m[c].sum/float64(m[c].n)))
	}
	return out
}

func (a analystTruth) activeMedications() []string {
	m := map[string]int{}
	for _, p := range a.patients {
		m[p.ID] = 0
	}
	for _, r := range a.meds {
		if r.Status == "active" {
			m[r.patient()]++
		}
	}
	return counted(m)
}
