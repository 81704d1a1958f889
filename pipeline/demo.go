package pipeline

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/fhirferry/fhirferry/configs"
	"github.com/fhirferry/fhirferry/fetch/auth"
	"github.com/fhirferry/fhirferry/fetch/bulktest"
	"github.com/fhirferry/fhirferry/sinks"
)

// Demo is what `fhirferry demo` runs: the built-in Bulk Data test server
// with SMART Backend Services in this process, a freshly registered ES384
// key, and a config whose one source exports the server's Group into a
// DuckDB warehouse.
type Demo struct {
	Dir        string
	ConfigPath string
	Warehouse  string // the DuckDB file
	Server     *bulktest.Server
	app        *App
	wh         sinks.Querier
}

// demoSource and demoSink name the demo config's source and sink.
const (
	demoSource = "demo"
	demoSink   = "warehouse"
)

// StartDemo resets dir (the warehouse, state and config of an earlier
// demo), starts the server and builds the App. deps.Sinks must build duckdb.
func StartDemo(ctx context.Context, dir string, patients int, deps Deps) (*Demo, error) {
	for _, p := range []string{configs.DefaultDuckDBFile, configs.DefaultDuckDBFile + ".wal", configs.DefaultDuckDBFile + ".writer",
		configs.DefaultDuckDBFile + ".writer.wal", "state", "spool", "keys", "fhirferry.yaml"} {
		if err := os.RemoveAll(filepath.Join(dir, p)); err != nil {
			return nil, err
		}
	}
	keyPath := filepath.Join(dir, "keys", "private-key.pem")
	smart, err := demoSMART(keyPath)
	if err != nil {
		return nil, err
	}
	// The server's clock starts today, so the data's last year is the
	// calendar's and the README's "in the last year" queries find rows.
	srv, err := bulktest.NewServer(bulktest.Options{Patients: patients, Seed: 7, Auth: smart, FileMaxResources: 2000,
		Start: time.Now().UTC().Truncate(24 * time.Hour)})
	if err != nil {
		return nil, err
	}
	d := &Demo{Dir: dir, ConfigPath: filepath.Join(dir, "fhirferry.yaml"), Warehouse: filepath.Join(dir, configs.DefaultDuckDBFile), Server: srv}
	if err := d.start(ctx, keyPath, deps); err != nil {
		srv.Close()
		return nil, err
	}
	return d, nil
}

// demoSMART writes a new key pair to keyPath and registers its public
// half with a SMART server, the way an operator registers a JWKS with an EHR.
func demoSMART(keyPath string) (*bulktest.SMARTServer, error) {
	if err := os.MkdirAll(filepath.Dir(keyPath), 0o700); err != nil {
		return nil, err
	}
	key, err := auth.GenerateKey(auth.ES384, "")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(keyPath, key.PrivatePEM, 0o600); err != nil {
		return nil, err
	}
	jwks, err := jwk.Parse(key.PublicJWKS)
	if err != nil {
		return nil, err
	}
	smart := bulktest.NewSMARTServer(bulktest.SMARTServerOptions{TokenLifetime: 5 * time.Minute})
	if err := smart.Register("fhirferry-demo", jwks); err != nil {
		return nil, err
	}
	return smart, nil
}

func (d *Demo) start(ctx context.Context, keyPath string, deps Deps) error {
	cfgText := fmt.Sprintf(`# Written by 'fhirferry demo'. The server it points at lives only while the demo runs.
data_dir: %s
sources:
  - name: %s
    base_url: %s
    level: group
    group_id: cohort
    export:
      # Patients who join get their whole history; those who leave, nothing kept.
      backfill_new_members: true
      former_members: purge
    http:
      min_wait: 200ms
      max_wait: 5s
    auth:
      type: smart
      client_id: fhirferry-demo
      private_key_file: %s
      alg: ES384
      scopes: [system/*.rs]
sinks:
  - name: %s
    type: duckdb
    duckdb:
      path: %s
`, d.Dir, demoSource, d.Server.BaseURL(), keyPath, demoSink, d.Warehouse)
	if err := os.WriteFile(d.ConfigPath, []byte(cfgText), 0o600); err != nil {
		return err
	}
	cfg, err := LoadConfig(d.ConfigPath)
	if err != nil {
		return err
	}
	if d.app, err = Build(ctx, cfg, deps); err != nil {
		return err
	}
	s, _ := d.app.Sink(demoSink)
	q, ok := s.(sinks.Querier)
	if !ok {
		d.app.Close()
		return errors.New("demo: the warehouse sink cannot be queried")
	}
	d.wh = q
	return nil
}

// Close stops the server and closes the warehouse.
func (d *Demo) Close() {
	d.app.Close()
	d.Server.Close()
}

// Run runs the demo source once.
func (d *Demo) Run(ctx context.Context) (*Result, error) {
	res, err := d.app.RunSource(ctx, demoSource)
	if res == nil {
		res = &Result{Source: demoSource}
	}
	return res, err
}

// Advance moves the server's clock a day on: new patients, updated and
// deleted resources.
func (d *Demo) Advance() bulktest.MutationResult {
	return d.Server.Advance(24*time.Hour, bulktest.Mutation{NewPatients: 2, UpdatedResources: 30, DeletedResources: 12,
		AddGroupMembers: 1, RemoveGroupMembers: 1})
}

// Tables lists the warehouse's tables with their row counts.
func (d *Demo) Tables(ctx context.Context) ([]sinks.TableInfo, error) { return d.wh.Tables(ctx) }

// DemoChange is what the warehouse holds of a resource the server changed.
type DemoChange struct {
	Kind        string // "updated" or "deleted"
	Key         bulktest.Key
	Gone        bool // no longer in the warehouse
	Version     string
	LastUpdated time.Time
}

// Changes reads the warehouse's copy of the resources mut updated (those
// the Group exports) and deleted, at most n of each kind; more reports
// how many of each were left out.
func (d *Demo) Changes(ctx context.Context, mut bulktest.MutationResult, n int) (changes []DemoChange, more map[string]int, err error) {
	truth := d.Server.Truth("group", "cohort", nil)
	var updated []bulktest.Key
	for _, k := range mut.Updated {
		if _, ok := truth[k]; ok {
			updated = append(updated, k) // updates outside the Group are not exported to it
		}
	}
	more = map[string]int{}
	for _, kind := range []struct {
		name string
		keys []bulktest.Key
	}{{"updated", updated}, {"deleted", mut.Deleted}} {
		for i, k := range kind.keys {
			if i == n {
				more[kind.name] = len(kind.keys) - n
				break
			}
			c, err := d.stored(ctx, kind.name, k)
			if err != nil {
				return nil, nil, err
			}
			changes = append(changes, c)
		}
	}
	return changes, more, nil
}

func (d *Demo) stored(ctx context.Context, kind string, k bulktest.Key) (DemoChange, error) {
	c := DemoChange{Kind: kind, Key: k}
	rows, err := d.wh.Query(ctx, `SELECT version_id, last_updated FROM fhir_resources WHERE resource_type = ? AND id = ?`, k.Type, k.ID)
	if err != nil {
		return c, err
	}
	defer rows.Close()
	if !rows.Next() {
		c.Gone = true
		return c, rows.Err()
	}
	var version sql.NullString
	var lastUpdated sql.NullTime
	if err := rows.Scan(&version, &lastUpdated); err != nil {
		return c, err
	}
	c.Version, c.LastUpdated = version.String, lastUpdated.Time.UTC()
	return c, rows.Err()
}

// DemoQuery is the query a population-health analyst would write first.
const DemoQuery = `SELECT p.gender, count(DISTINCT p.id) AS patients, count(c.id) AS conditions,
       round(count(c.id) / count(DISTINCT p.id), 1) AS conditions_per_patient
FROM patient p LEFT JOIN condition c ON c.namespace = p.namespace AND c.patient_id = p.id
GROUP BY p.gender ORDER BY p.gender`

// DemoRow is one row of DemoQuery.
type DemoRow struct {
	Gender               string
	Patients, Conditions int64
	PerPatient           float64
}

// SampleQuery runs DemoQuery on the warehouse.
func (d *Demo) SampleQuery(ctx context.Context) ([]DemoRow, error) {
	rows, err := d.wh.Query(ctx, DemoQuery)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []DemoRow
	for rows.Next() {
		var gender sql.NullString
		var r DemoRow
		if err := rows.Scan(&gender, &r.Patients, &r.Conditions, &r.PerPatient); err != nil {
			return nil, err
		}
		r.Gender = gender.String
		out = append(out, r)
	}
	return out, rows.Err()
}
