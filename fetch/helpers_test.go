package fetch

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/stretchr/testify/require"
)

// fakeTokens is a TokenSource whose token changes after each Invalidate.
type fakeTokens struct {
	mu          sync.Mutex
	gen         int
	invalidated []string
}

func (f *fakeTokens) Token(context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return "tok-" + string(rune('a'+f.gen)), nil
}

func (f *fakeTokens) Invalidate(tok string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.invalidated = append(f.invalidated, tok)
	f.gen++
}

// recObserver records Observer events.
type recObserver struct {
	mu       sync.Mutex
	retries  []string
	progress []string
	bytes    map[string]int64
}

func (o *recObserver) Retry(r string)         { o.mu.Lock(); o.retries = append(o.retries, r); o.mu.Unlock() }
func (o *recObserver) HTTPStatus(string, int) {}
func (o *recObserver) Bytes(k string, n int64) {
	o.mu.Lock()
	if o.bytes == nil {
		o.bytes = map[string]int64{}
	}
	o.bytes[k] += n
	o.mu.Unlock()
}
func (o *recObserver) Progress(_, t string) {
	o.mu.Lock()
	o.progress = append(o.progress, t)
	o.mu.Unlock()
}
func (o *recObserver) Retries() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.retries...)
}

func testClient(t *testing.T, base string, mod func(*Options)) *Client {
	t.Helper()
	o := Options{BaseURL: base, MinWait: time.Millisecond, MaxWait: 20 * time.Millisecond, Retries: 3, RequestTimeout: 5 * time.Second}
	if mod != nil {
		mod(&o)
	}
	c, err := New(o)
	require.NoError(t, err)
	return c
}

func server(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

func gz(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	_, err := w.Write(b)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	return buf.Bytes()
}

// readSpool decompresses a spooled file.
func readSpool(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	zr, err := gzip.NewReader(f)
	require.NoError(t, err)
	b, err := io.ReadAll(zr)
	require.NoError(t, err)
	return string(b)
}

func ndjson(typ string, n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		b.WriteString(`{"resourceType":"` + typ + `","id":"` + typ[:1] + strings.Repeat("x", i%3) + `"}` + "\n")
	}
	return b.String()
}

const oo400 = `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid","diagnostics":"Invalid _since"}]}`
const ooTransient = `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"transient","diagnostics":"try later"}]}`
