package bulktest

import (
	"log/slog"
	"net/http"
	"time"
)

// Options configures a Server. The zero value (plus Patients) is a valid,
// open server with the defaults listed on each field.
type Options struct {
	// Patients is the number of patients generated at start.
	Patients int
	// Seed makes the generated data reproducible: equal seeds give equal data.
	Seed int64
	// Start is the server clock at start (default 2025-01-01T00:00:00Z).
	// The clock only moves through Advance.
	Start time.Time
	// FileMaxResources splits a type over several files (default 10000).
	FileMaxResources int
	// PollsBeforeComplete is the number of status polls answered 202 (with
	// X-Progress and Retry-After) before the manifest (default 1).
	// Set it negative to complete on the first poll.
	PollsBeforeComplete int
	// RetryAfter is the Retry-After value sent with 202 (default "1").
	RetryAfter string
	// ExpiresAfter sets the manifest's Expires header, counted from the
	// wall clock (not the server clock) because clients compare it with
	// theirs (default 1h).
	ExpiresAfter time.Duration
	// ManifestPageSize is the number of output entries per manifest page
	// when the client sent allowPartialManifests=true (default 10).
	ManifestPageSize int
	// Auth, when non-nil, must pass every kick-off, status, DELETE and
	// Group read, and every file and attachment GET when files need a token.
	// nil makes an open server.
	Auth Authorizer
	// FilesRequireToken sets the manifest's requiresAccessToken and whether
	// file GETs are checked with Auth. Default: Auth != nil.
	FilesRequireToken *bool
	// CrossOriginFiles serves file URLs from a second listener whose URLs
	// use the host name "localhost" instead of 127.0.0.1 (another origin),
	// so clients must decide where the token goes.
	CrossOriginFiles bool
	// RedirectFiles makes file URLs answer 307 to a signed URL on the other
	// origin; the signed URL needs no token (like S3 presigned URLs).
	RedirectFiles bool
	// TransactionTimeOffset emits transactionTime in this zone (e.g.
	// time.FixedZone("", -5*3600)) to test verbatim round-trips of
	// `_since`. Default: UTC with "Z".
	TransactionTimeOffset *time.Location
	// Compat2018 accepts the 2018 parameter names `start` and
	// `outputFormat`, and answers the manifest with the
	// X-FHIR-Links-Require-Authorization header instead of
	// requiresAccessToken.
	Compat2018 bool
	// PublicURL is the origin (scheme://host:port) used in URLs when the
	// server is used through Handler without Serve. Optional.
	PublicURL string
	// Faults are the initial faults; see SetFaults.
	Faults Faults
	// Logger receives one line per request at debug level; nil discards.
	Logger *slog.Logger
}

// Authorizer plugs an authorization server (SMART Backend Services) into
// the bulk server. Implementations must be safe for concurrent use.
type Authorizer interface {
	// Routes mounts the authorization endpoints (e.g.
	// /fhir/.well-known/smart-configuration, /auth/token) on mux. baseURL
	// is the FHIR base, e.g. http://127.0.0.1:PORT/fhir. It is called once,
	// before the server accepts requests.
	Routes(mux *http.ServeMux, baseURL string)
	// Authorize returns nil when r carries a valid access token. The error
	// text is sent to the client in an OperationOutcome with status 401, so
	// it must not contain the token.
	Authorize(r *http.Request) error
}

// Faults selects injected failures. Integer fields are "next N" counters:
// each matching request consumes one, in arrival order. Booleans and
// durations stay in force until SetFaults changes them.
type Faults struct {
	// KickOffErrors: the next N kick-offs get 500 OperationOutcome.
	KickOffErrors int
	// KickOff429: the next N kick-offs get 429 "export already running"
	// with Retry-After (styled by RetryAfterStyle).
	KickOff429 int
	// KickOffNoContentLocation answers 202 without Content-Location.
	KickOffNoContentLocation bool
	// KickOffRelativeContentLocation answers 202 with an absolute-path
	// (relative) Content-Location such as /fhir/bulkstatus/ID.
	KickOffRelativeContentLocation bool
	// StatusTransient: the next N polls get 500 OperationOutcome with
	// issue.code=transient; the job stays alive.
	StatusTransient int
	// Status429: the next N polls get 429 with Retry-After.
	Status429 int
	// RetryAfterStyle shapes Retry-After on 429 answers: "seconds"
	// (default: Options.RetryAfter), "http-date" (now+1s), "malformed"
	// (absolute epoch seconds, then epoch milliseconds, alternating, like
	// the reference server's rate limiter) or "zero".
	RetryAfterStyle string
	// StatusGateway: the next N polls get 502 text/html (a non-FHIR proxy).
	StatusGateway int
	// FailJob makes every poll of every job answer 500 with a non-transient
	// OperationOutcome (the job failed).
	FailJob bool
	// ErrorFiles: the next kick-offs move up to N output files (in total)
	// to error[]; their URLs serve a one-line OperationOutcome.
	ErrorFiles int
	// ExpiredDownloads: the next N file GETs get 410 OperationOutcome and
	// expire every URL of that job's current manifest; re-GET the status URL
	// for fresh URLs that work.
	ExpiredDownloads int
	// TruncateDownloads: the next N file GETs answer 200 and then cut the
	// connection mid-file.
	TruncateDownloads int
	// File5xx: the next N file GETs get 500 OperationOutcome.
	File5xx int
	// File429: the next N file GETs get 429 with Retry-After.
	File429 int
	// SlowFirstByte delays the response headers of every file GET.
	SlowFirstByte time.Duration
	// WrongTypeLines: inject N lines (in total, into the next files served)
	// whose resourceType differs from the file's type.
	WrongTypeLines int
	// MalformedLines: inject N non-JSON lines into the next files served.
	MalformedLines int
	// RejectPatientParam answers every kick-off that carries a `patient`
	// parameter with 400 OperationOutcome, like servers that do not
	// support it (the Group membership pattern must fall back).
	RejectPatientParam bool
	// GroupReadUnsupported answers every Group read with 400
	// OperationOutcome not-supported, like servers that export Groups but
	// do not read them: a client must take membership from elsewhere.
	GroupReadUnsupported bool
	// ExportGroupResource makes Group-level exports include the exported
	// Group itself (a Group file, when it changed since _since), as some
	// servers do.
	ExportGroupResource bool
	// GroupReadMemberLimit > 0 lists at most this many members in a Group
	// read (quantity still says how many there are), like servers that
	// truncate large Groups: the rest are found with the paged search
	// Patient?_has:Group:member:_id=ID.
	GroupReadMemberLimit int
	// GroupElementsUnsupported answers a Group read with _elements 400.
	GroupElementsUnsupported bool
	// VeryLongLine: the next output file served starts with a resource
	// whose text.div is this many bytes long (consumed once).
	VeryLongLine int
}

// Mutation describes what Advance changes at the new clock time. Counts
// are upper bounds: Advance may do fewer when there is nothing left to
// pick (e.g. no tombstones to recreate); MutationResult tells what it did.
type Mutation struct {
	// NewPatients creates patients with a full history, all stamped with
	// the new clock time. They join the "cohort" Group.
	NewPatients int
	// UpdatedResources gives live resources a new version.
	UpdatedResources int
	// DeletedResources deletes live resources (never a Patient).
	DeletedResources int
	// RecreatedResources brings back deleted resources under their old id.
	RecreatedResources int
	// AddGroupMembers adds existing non-member patients (with their old
	// history) to the "cohort" Group.
	AddGroupMembers int
	// RemoveGroupMembers takes members out of the "cohort" Group; their
	// data stays on the server. A removed patient can be added again.
	RemoveGroupMembers int
}

// MutationResult lists what an Advance did, so tests can compare a client's
// tables with Truth and reason about exactly which rows changed.
type MutationResult struct {
	// Time is the server clock after the Advance, and the lastUpdated of
	// every change.
	Time             time.Time
	NewPatients      []Key
	Created          []Key // every resource of the new patients, Patient included
	Updated          []Key
	Deleted          []Key
	Recreated        []Key
	AddedToGroup     []Key // Patient keys added to the cohort Group
	RemovedFromGroup []Key // Patient keys taken out of the cohort Group
}

// Key identifies a resource.
type Key struct{ Type, ID string }

// TruthRow is the current state of one resource.
type TruthRow struct {
	LastUpdated time.Time
	VersionID   string
	JSON        []byte
}

// Request kinds recorded in Stats.Requests.
const (
	KindKickOff    = "kickoff"
	KindStatus     = "status"
	KindDelete     = "delete"
	KindFile       = "file"
	KindAttachment = "attachment"
	KindGroupRead  = "group"
	KindSearch     = "search" // Patient?_has:Group:member:_id=ID
	KindMetadata   = "metadata"
	KindOther      = "other"
)

// RequestRecord is one request the server answered.
type RequestRecord struct {
	Kind    string
	Method  string
	Path    string
	Origin  string // "main" or "files" (the second, cross-origin listener)
	HadAuth bool   // the request carried an Authorization header
	Status  int
	Fault   string // the injected fault that answered it, if any
	// Params are a kick-off's parameters as name=value, from the query
	// (sorted by name) or the POST Parameters body (in body order).
	Params []string
}

// Stats counts what the server saw. It is a copy; later requests don't
// change it.
type Stats struct {
	KickOffs    int
	StatusPolls int
	Deletes     int
	// Downloads counts file GETs per file URL path (all answers, faults
	// included).
	Downloads map[string]int
	// FileBytes is the number of NDJSON bytes (before compression) written
	// to file responses.
	FileBytes int64
	// TokenlessFileRequests counts file and attachment GETs without an
	// Authorization header; AuthHeadersSeenOnFiles those with one.
	TokenlessFileRequests  int
	AuthHeadersSeenOnFiles int
	// AuthHeadersSeenOnFilesOrigin counts file GETs on the second origin
	// that carried an Authorization header.
	AuthHeadersSeenOnFilesOrigin int
	// AuthFailures counts requests rejected by the Authorizer.
	AuthFailures int
	// Faults counts injected faults by name (the Faults field name, e.g.
	// "StatusTransient", or "Redirect" for RedirectFiles).
	Faults map[string]int
	// Requests is the per-request log, oldest first (capped at 100000).
	Requests []RequestRecord
}
