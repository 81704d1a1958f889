package bulktest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Server is a Bulk Data server. All methods are safe for concurrent use.
type Server struct {
	opts      Options
	log       *slog.Logger
	filesAuth bool // file GETs need a token (manifest requiresAccessToken)
	gen       *generator
	gzip      *sync.Pool // of *gzip.Writer for file downloads

	st atomic.Pointer[state] // current data snapshot; replaced by Advance

	mu      sync.Mutex // guards everything below
	advMu   sync.Mutex // serialises Advance
	faults  Faults
	stats   Stats
	jobs    map[string]*job
	jobSeq  int
	malfSeq int // alternates malformed Retry-After styles

	baseURL     atomic.Pointer[string] // e.g. http://127.0.0.1:PORT/fhir; nil until known
	filesOrigin string                 // e.g. http://localhost:PORT2; "" without a second origin
	mux         *http.ServeMux
	servers     []*http.Server
	listeners   []net.Listener
	closed      bool
	wg          sync.WaitGroup
}

// fhirPath is the path of the FHIR base on every origin.
const fhirPath = "/fhir"

// New builds a server that is not listening yet: call Serve, or mount
// Handler in your own http.Server. It is what `fhirferry testserver` uses.
func New(opts Options) (*Server, error) {
	if opts.Patients < 0 {
		return nil, fmt.Errorf("bulktest: Patients must be >= 0, got %d", opts.Patients)
	}
	if opts.Start.IsZero() {
		opts.Start = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	opts.Start = opts.Start.UTC().Truncate(time.Millisecond)
	if opts.FileMaxResources <= 0 {
		opts.FileMaxResources = 10000
	}
	if opts.PollsBeforeComplete == 0 {
		opts.PollsBeforeComplete = 1
	} else if opts.PollsBeforeComplete < 0 {
		opts.PollsBeforeComplete = 0
	}
	if opts.RetryAfter == "" {
		opts.RetryAfter = "1"
	}
	if opts.ExpiresAfter <= 0 {
		opts.ExpiresAfter = time.Hour
	}
	if opts.ManifestPageSize <= 0 {
		opts.ManifestPageSize = 10
	}
	switch opts.Faults.RetryAfterStyle {
	case "", "seconds", "http-date", "malformed", "zero":
	default:
		return nil, fmt.Errorf("bulktest: Faults.RetryAfterStyle %q: want seconds, http-date, malformed or zero", opts.Faults.RetryAfterStyle)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Server{
		opts:      opts,
		log:       log,
		filesAuth: opts.Auth != nil,
		gen:       newGenerator(opts.Seed, opts.Start),
		gzip:      newGzipPool(),
		faults:    opts.Faults,
		jobs:      map[string]*job{},
	}
	if opts.FilesRequireToken != nil {
		s.filesAuth = *opts.FilesRequireToken
	}
	s.st.Store(initialState(s.gen, opts.Patients, opts.Start))
	s.resetStatsLocked()
	if opts.PublicURL != "" {
		b := strings.TrimRight(opts.PublicURL, "/") + fhirPath
		s.baseURL.Store(&b)
	}
	return s, nil
}

// NewServer builds a server and starts it on 127.0.0.1:0, like httptest.
// Close stops it.
func NewServer(opts Options) (*Server, error) {
	s, err := New(opts)
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bulktest: listen: %w", err)
	}
	if err := s.start(l); err != nil {
		_ = l.Close()
		return nil, err
	}
	return s, nil
}

// Serve serves on l until ctx ends, then shuts down. With CrossOriginFiles
// or RedirectFiles it also opens a second listener on l's host.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	if err := s.start(l); err != nil {
		return err
	}
	<-ctx.Done()
	s.Close()
	return nil
}

// start sets the URLs, builds the mux and serves l (and the files origin)
// in the background.
func (s *Server) start(l net.Listener) error {
	addr, ok := l.Addr().(*net.TCPAddr)
	if !ok {
		return fmt.Errorf("bulktest: listener address %v is not TCP", l.Addr())
	}
	var fl net.Listener
	if s.opts.CrossOriginFiles || s.opts.RedirectFiles {
		host := "127.0.0.1"
		if !addr.IP.IsUnspecified() {
			host = addr.IP.String()
		}
		var err error
		fl, err = net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return fmt.Errorf("bulktest: listen for the files origin: %w", err)
		}
	}
	s.mu.Lock()
	if s.closed || s.mux != nil {
		s.mu.Unlock()
		if fl != nil {
			_ = fl.Close()
		}
		return errors.New("bulktest: server already started or closed")
	}
	if s.opts.PublicURL == "" {
		host := addr.IP.String()
		if addr.IP.IsUnspecified() {
			host = "127.0.0.1"
		}
		b := "http://" + net.JoinHostPort(host, fmt.Sprint(addr.Port)) + fhirPath
		s.baseURL.Store(&b)
	}
	if fl != nil {
		s.filesOrigin = fmt.Sprintf("http://localhost:%d", fl.Addr().(*net.TCPAddr).Port)
	}
	s.buildMuxLocked()
	main := &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second}
	s.servers = append(s.servers, main)
	s.listeners = append(s.listeners, l)
	s.serveLocked(main, l)
	if fl != nil {
		fs := &http.Server{Handler: http.HandlerFunc(s.serveFilesOrigin), ReadHeaderTimeout: 10 * time.Second}
		s.servers = append(s.servers, fs)
		s.listeners = append(s.listeners, fl)
		s.serveLocked(fs, fl)
	}
	s.mu.Unlock()
	s.log.Info("bulk data test server listening", "base_url", s.BaseURL(), "files_origin", s.filesOrigin)
	return nil
}

func (s *Server) serveLocked(hs *http.Server, l net.Listener) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := hs.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("bulk data test server stopped", "error", err)
		}
	}()
}

// Handler returns the FHIR handler (with the Authorizer's routes), for
// mounting in another server. URLs use Options.PublicURL, else the
// request's Host. Without Serve there is no second origin, so
// CrossOriginFiles and RedirectFiles serve files from this handler.
func (s *Server) Handler() http.Handler {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mux == nil {
		s.buildMuxLocked()
	}
	return s.mux
}

func (s *Server) buildMuxLocked() {
	s.mux = http.NewServeMux()
	if s.opts.Auth != nil {
		s.opts.Auth.Routes(s.mux, s.BaseURL())
	}
	s.mux.HandleFunc("/", s.serveMain)
}

// BaseURL returns the FHIR base, e.g. http://127.0.0.1:PORT/fhir. It is
// empty before the server listens (unless Options.PublicURL is set).
func (s *Server) BaseURL() string {
	if b := s.baseURL.Load(); b != nil {
		return *b
	}
	return ""
}

// Close stops the listeners and cuts open connections. It is idempotent.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	servers := s.servers
	s.mu.Unlock()
	for _, hs := range servers {
		_ = hs.Close()
	}
	s.wg.Wait()
}

// Now returns the server clock.
func (s *Server) Now() time.Time { return s.st.Load().now }

// SetFaults replaces the fault configuration (and its counters).
func (s *Server) SetFaults(f Faults) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = f
}

// Faults returns the fault configuration with the counters as consumed so
// far.
func (s *Server) Faults() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults
}

// Stats returns a copy of the counters and the request log.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.stats
	c.Downloads = make(map[string]int, len(s.stats.Downloads))
	for k, v := range s.stats.Downloads {
		c.Downloads[k] = v
	}
	c.Faults = make(map[string]int, len(s.stats.Faults))
	for k, v := range s.stats.Faults {
		c.Faults[k] = v
	}
	c.Requests = append([]RequestRecord(nil), s.stats.Requests...)
	return c
}

// ResetStats zeroes the counters and the request log.
func (s *Server) ResetStats() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resetStatsLocked()
}

func (s *Server) resetStatsLocked() {
	s.stats = Stats{Downloads: map[string]int{}, Faults: map[string]int{}}
}

// GroupIDs returns the ids of the Groups the server knows.
func (s *Server) GroupIDs() []string { return []string{groupAll, groupCohort} }
