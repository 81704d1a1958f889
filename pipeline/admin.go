package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Controller is what the admin endpoint needs from the scheduler.
type Controller interface {
	Status() []SourceStatus
	Trigger(source string) error
}

// AdminOptions configure the admin HTTP handler.
type AdminOptions struct {
	Gatherer prometheus.Gatherer
	// Controller returns the current scheduler; it is a func because a
	// config reload may replace it. It may return nil while starting.
	Controller func() Controller
	// Ready returns nil when the daemon can do its work: the configuration
	// is loaded and every sink answers. It gets a context bounded by
	// ReadyTimeout. nil means always ready.
	Ready        func(ctx context.Context) error
	ReadyTimeout time.Duration // default 5s
	Logger       *slog.Logger
}

// StatusDoc is the /status document.
type StatusDoc struct {
	Time    time.Time      `json:"time"`
	Sources []SourceStatus `json:"sources"`
}

// NewAdminHandler serves /metrics, /healthz (liveness: the process
// answers), /readyz (readiness: Ready), /status (JSON) and
// POST /runs/{source} (start a run now: 202, 404 unknown source, 409
// already running, 503 stopping or reloading).
func NewAdminHandler(o AdminOptions) http.Handler {
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 5 * time.Second
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctl := func() Controller {
		if o.Controller == nil {
			return nil
		}
		return o.Controller()
	}
	mux := http.NewServeMux()
	if o.Gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{ErrorLog: slogPrinter{log}}))
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if ctl() == nil {
			http.Error(w, "not ready: starting", http.StatusServiceUnavailable)
			return
		}
		if o.Ready != nil {
			ctx, cancel := context.WithTimeout(r.Context(), o.ReadyTimeout)
			defer cancel()
			if err := o.Ready(ctx); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		doc := StatusDoc{Time: time.Now().UTC(), Sources: []SourceStatus{}}
		if c := ctl(); c != nil {
			doc.Sources = c.Status()
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(doc)
	})
	mux.HandleFunc("POST /runs/{source}", func(w http.ResponseWriter, r *http.Request) {
		c := ctl()
		if c == nil {
			writeJSONError(w, http.StatusServiceUnavailable, "the daemon is starting")
			return
		}
		src := r.PathValue("source")
		err := c.Trigger(src)
		switch {
		case err == nil:
			log.Info("run triggered through the admin endpoint", "source", src)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusAccepted)
			_ = json.NewEncoder(w).Encode(map[string]string{"source": src, "state": "queued"})
		case errors.Is(err, ErrUnknownSource):
			writeJSONError(w, http.StatusNotFound, err.Error())
		case errors.Is(err, ErrRunInProgress):
			writeJSONError(w, http.StatusConflict, err.Error())
		case errors.Is(err, ErrNotAccepting):
			writeJSONError(w, http.StatusServiceUnavailable, err.Error())
		default:
			writeJSONError(w, http.StatusInternalServerError, err.Error())
		}
	})
	return mux
}

func writeJSONError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.log.Warn("metrics endpoint", "err", v) }

// AdminServer is the admin endpoint bound to its address.
type AdminServer struct {
	ln  net.Listener
	srv *http.Server
}

// ListenAdmin binds addr (so a taken port fails the start, before
// READY=1) and returns a server to Serve.
func ListenAdmin(ctx context.Context, addr string, h http.Handler) (*AdminServer, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &AdminServer{ln: ln, srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}}, nil
}

// Close releases the address of a server that was never served.
func (a *AdminServer) Close() error { return a.ln.Close() }

// Addr is the bound address (useful with port 0).
func (a *AdminServer) Addr() string { return a.ln.Addr().String() }

// Serve answers requests until ctx is cancelled, then shuts down, letting
// requests in flight finish for up to 5 seconds.
func (a *AdminServer) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- a.srv.Serve(a.ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := a.srv.Shutdown(sctx)
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	return err
}
