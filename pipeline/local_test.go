package pipeline

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fhirferry/fhirferry/fetch"
)

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
	}
}

func TestGuessKind(t *testing.T) {
	for name, want := range map[string]string{
		"Patient.ndjson": "output/Patient", "3.Observation.ndjson.gz": "output/Observation",
		"Observation-2.ndjson": "output/Observation", "4.Observation.deleted.ndjson": "deleted/Bundle",
		"err_1.ndjson": "error/OperationOutcome", "1.OperationOutcome.ndjson": "error/OperationOutcome",
		"data.ndjson": "output/",
	} {
		k, typ := guessKind(name)
		require.Equal(t, want, string(k)+"/"+typ, name)
	}
}

func TestLocalExportManifest(t *testing.T) {
	ctx := context.Background()
	t.Run("names from the manifest", func(t *testing.T) {
		dir := t.TempDir()
		writeFiles(t, dir, map[string]string{
			"1.Patient.ndjson": "{}", "2.Observation.ndjson": "{}", "deleted/3.Bundle.ndjson": "{}",
			"manifest.json": `{"transactionTime":"2025-01-20T10:11:12-05:00","requiresAccessToken":false,
			  "output":[{"type":"Patient","url":"https://h/x/1.Patient.ndjson"},{"type":"Observation","url":"https://h/x/2.Observation.ndjson?sig=1"}],
			  "deleted":[{"type":"Bundle","url":"https://h/x/3.Bundle.ndjson"}],"error":[]}`,
		})
		l := &LocalExport{Dir: dir}
		su, err := l.KickOff(ctx, fetch.Request{})
		require.NoError(t, err)
		m, err := l.Wait(ctx, su)
		require.NoError(t, err)
		require.Equal(t, "2025-01-20T10:11:12-05:00", m.TransactionTime)
		require.Len(t, m.Output, 2)
		require.Equal(t, "Observation", m.Output[1].Type)
		require.Len(t, m.Deleted, 1)
		require.Equal(t, 2, m.Deleted[0].Index)
	})
	t.Run("joined per type", func(t *testing.T) {
		dir := t.TempDir()
		writeFiles(t, dir, map[string]string{
			"Observation.ndjson": "{}",
			"manifest.json": `{"transactionTime":"T","output":[{"type":"Observation","url":"https://h/1.Observation.ndjson"},
			  {"type":"Observation","url":"https://h/2.Observation.ndjson"}]}`,
		})
		m, err := (&LocalExport{Dir: dir}).Wait(ctx, "file://x")
		require.NoError(t, err)
		require.Len(t, m.Output, 1, "two manifest entries joined into one file load it once")
	})
	t.Run("a listed file is missing", func(t *testing.T) {
		dir := t.TempDir()
		writeFiles(t, dir, map[string]string{
			"Patient.ndjson": "{}",
			"manifest.json":  `{"transactionTime":"T","output":[{"type":"Condition","url":"https://h/9.Condition.ndjson"}]}`,
		})
		_, err := (&LocalExport{Dir: dir}).Wait(ctx, "file://x")
		require.ErrorContains(t, err, "9.Condition.ndjson (Condition) listed in the manifest is not in the folder")
	})
	t.Run("no manifest", func(t *testing.T) {
		dir := t.TempDir()
		writeFiles(t, dir, map[string]string{"Patient.ndjson.gz": "", "x.deleted.ndjson": "", ".hidden/Patient.ndjson": ""})
		m, err := (&LocalExport{Dir: dir, TransactionTime: "2025-02-01T00:00:00Z"}).Wait(ctx, "file://x")
		require.NoError(t, err)
		require.Equal(t, "2025-02-01T00:00:00Z", m.TransactionTime)
		require.Len(t, m.Output, 1)
		require.Len(t, m.Deleted, 1)
	})
}
