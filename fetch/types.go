package fetch

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"time"
)

// TokenSource supplies bearer tokens (implemented by fetch/auth).
// Invalidate is called after a 401 so the next Token call renews (once).
type TokenSource interface {
	Token(ctx context.Context) (string, error)
	Invalidate(token string)
}

// Export levels for Request.Level.
const (
	LevelSystem  = "system"
	LevelPatient = "patient"
	LevelGroup   = "group"
)

// Request describes one $export kick-off. Optional STU3 parameters are sent
// only when set, so a zero field never reaches a server that might reject it.
type Request struct {
	Level   string // "system" | "patient" | "group"
	GroupID string // required for Level "group"
	// Since and Until are sent verbatim (percent-encoded on the wire), so a
	// previous transactionTime round-trips exactly.
	Since, Until          string
	Types                 []string
	Elements              []string
	TypeFilters           []string
	Patients              []string // "Patient/123" or "123"; forces POST
	IncludeAssociatedData []string
	OutputFormat          string // omitted when empty
	AllowPartialManifests bool
	OrganizeOutputBy      string
	Lenient               bool   // Prefer: handling=lenient
	Method                string // auto | get | post
	Compat                string // "" | "2018-draft"
}

// Options configure a Client. Zero values take the documented defaults.
type Options struct {
	BaseURL    string       // FHIR base, e.g. https://ehr.example.com/fhir
	HTTPClient *http.Client // default: a fresh client; its CheckRedirect is wrapped
	Auth       TokenSource  // nil = no Authorization header at all

	Parallel       int           // concurrent downloads (default 5)
	Retries        int           // attempts after the first, per request (0: none)
	MinWait        time.Duration // lower clamp of every wait (default 2s)
	MaxWait        time.Duration // upper clamp of every wait (default 15m)
	RequestTimeout time.Duration // per request; for downloads an idle timeout (default 5m)
	// ExportTimeout bounds Wait overall; on expiry the job is DELETEd and
	// Wait fails with ErrExportTimeout (default 6h).
	ExportTimeout time.Duration
	MaxLineBytes  int64 // longest accepted NDJSON line (default 64 MiB)
	UserAgent     string
	Logger        *slog.Logger // default: discard
	Observer      Observer     // nil ok
}

// Observer receives events for metrics (implemented by the daemon's metrics).
// Methods are called concurrently and must not block.
type Observer interface {
	// Retry reports one retry: "429", "5xx", "network", "auth", "truncated", "expired".
	Retry(reason string)
	// HTTPStatus reports a response code; kind is kickoff, status, file, delete or attachment.
	HTTPStatus(kind string, code int)
	// Bytes reports bytes received on the wire.
	Bytes(kind string, n int64)
	// Progress reports a server X-Progress text; it is informational only.
	Progress(statusURL, text string)
}

// FileKind says which manifest array a File came from.
type FileKind string

// File kinds.
const (
	KindOutput  FileKind = "output"
	KindDeleted FileKind = "deleted"
	KindError   FileKind = "error"
)

// File is one entry of a manifest's output, deleted or error array.
type File struct {
	Kind  FileKind
	Index int // position in Manifest.Files(); stable across manifest refreshes
	Type  string
	URL   string
	Count int64 // -1 when absent
}

// Manifest is a complete-status response (all pages merged).
type Manifest struct {
	StatusURL           string
	TransactionTime     string // verbatim: the next _since
	Request             string
	RequiresAccessToken bool
	Output              []File
	Deleted             []File
	Error               []File
	OutputOrganizedBy   string
	Expires             time.Time       // zero when the server sent no Expires
	Raw                 json.RawMessage // first page as received
}

// Spooled is a file stored in the spool.
type Spooled struct {
	File            File
	Path            string // gzip-compressed NDJSON on disk
	Lines           int64  // non-blank lines
	Bytes           int64  // decompressed NDJSON bytes
	WireBytes       int64  // bytes received (compressed if the server compressed)
	MismatchedTypes int64  // lines whose resourceType differs from File.Type
	LongLines       int64  // lines over max_line_bytes (kept; the transform rejects them)
}

// Attachment is one Attachment.url fetched beside the export.
type Attachment struct {
	Resource    string // "DocumentReference/123"
	URL         string // absolute URL fetched
	ContentType string // from the Attachment, else the response
	Path        string // raw bytes on disk (Binary JSON already decoded)
	Bytes       int64
}
