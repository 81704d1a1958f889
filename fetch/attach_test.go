package fetch

import (
	"encoding/base64"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestAttachmentsRelativeAndBinary(t *testing.T) {
	pdf := []byte("%PDF-1.4 not really")
	type hit struct{ path, auth, accept string }
	var mu sync.Mutex // attachments download in parallel
	var hits []hit
	s := server(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits = append(hits, hit{r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("Accept")})
		mu.Unlock()
		switch r.URL.Path {
		case "/fhir/Binary/b1":
			w.Header().Set("Content-Type", "application/fhir+json")
			io.WriteString(w, `{"resourceType":"Binary","contentType":"application/pdf","data":"`+base64.StdEncoding.EncodeToString(pdf)+`"}`)
		case "/files/note.txt":
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "raw note")
		default:
			w.WriteHeader(404)
		}
	})
	lines := `{"resourceType":"DocumentReference","id":"d1","content":[{"attachment":{"contentType":"application/pdf","url":"Binary/b1"}},{"attachment":{"contentType":"text/plain","data":"aW5saW5l"}}]}
{"resourceType":"DiagnosticReport","id":"r1","presentedForm":[{"url":"` + s.URL + `/files/note.txt"}],"extension":[{"url":"http://not-an-attachment"}]}
{"resourceType":"DocumentReference","id":"d2","content":[{"attachment":{"contentType":"application/pdf","url":"Binary/b1"}}]}
`
	dir := t.TempDir()
	spool := filepath.Join(dir, "o.gz")
	require.NoError(t, os.WriteFile(spool, gz(t, []byte(lines)), 0o644))
	c := testClient(t, s.URL+"/fhir", func(o *Options) { o.Auth = &fakeTokens{} })
	m := manifestFor("", true)
	atts, err := c.Attachments(t.Context(), m, []Spooled{{File: File{Kind: KindOutput, Type: "DocumentReference"}, Path: spool}}, filepath.Join(dir, "att"))
	require.NoError(t, err)
	require.Len(t, atts, 2, "inline data and duplicate URLs are not fetched")
	sort.Slice(hits, func(i, j int) bool { return hits[i].path < hits[j].path })
	require.Equal(t, []hit{{"/fhir/Binary/b1", "Bearer tok-a", "application/pdf"}, {"/files/note.txt", "Bearer tok-a", "*/*"}}, hits)
	got, err := os.ReadFile(atts[0].Path)
	require.NoError(t, err)
	require.Equal(t, pdf, got, "Binary JSON decoded to its bytes")
	require.Equal(t, Attachment{Resource: "DocumentReference/d1", URL: s.URL + "/fhir/Binary/b1", ContentType: "application/pdf", Path: atts[0].Path, Bytes: int64(len(pdf))}, atts[0])
	got, err = os.ReadFile(atts[1].Path)
	require.NoError(t, err)
	require.Equal(t, "raw note", string(got))
	require.Equal(t, "DiagnosticReport/r1", atts[1].Resource)

	// Without requiresAccessToken no token is sent.
	hits = nil
	m.RequiresAccessToken = false
	_, err = c.Attachments(t.Context(), m, []Spooled{{File: File{Kind: KindOutput}, Path: spool}}, filepath.Join(dir, "att2"))
	require.NoError(t, err)
	for _, h := range hits {
		require.Empty(t, h.auth)
	}
}
