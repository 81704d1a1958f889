package transform

// Origin is the provenance stamped on every row of a run.
type Origin struct {
	// Namespace is the source's namespace, stamped on the batches (a sink
	// stores it with every row; see schemas.ColNamespace).
	Namespace       string
	Source          string
	ExportID        string
	TransactionTime string
}

// Input is one NDJSON file of an export.
type Input struct {
	Path string
	// Name is the file's name in provenance columns (never a URL: URLs may
	// carry signatures).
	Name string
	// Kind is "output", "deleted" or "error".
	Kind string
	// Type is the manifest's type for the file; "" accepts any resource type.
	Type string
	// Index numbers the run's files; it orders duplicates (see ColSeq).
	Index int
}

// FileStats counts what files held.
type FileStats struct {
	Lines     int64
	Bytes     int64
	Resources int64
	Deleted   int64
	// DeletedByType counts Deleted by the deleted resource's type (a
	// deleted file's manifest type is Bundle).
	DeletedByType map[string]int64
	Outcomes      int64
	Rejects       int64
	ErrorIssues   int64 // OperationOutcome issues of severity error or fatal
	// FirstIssue is the first error/fatal issue's text, for the run's error.
	FirstIssue string
}

// Add accumulates o into s.
func (s *FileStats) Add(o FileStats) {
	s.Lines += o.Lines
	s.Bytes += o.Bytes
	s.Resources += o.Resources
	s.Deleted += o.Deleted
	for t, n := range o.DeletedByType {
		if s.DeletedByType == nil {
			s.DeletedByType = map[string]int64{}
		}
		s.DeletedByType[t] += n
	}
	s.Outcomes += o.Outcomes
	s.Rejects += o.Rejects
	s.ErrorIssues += o.ErrorIssues
	if s.FirstIssue == "" {
		s.FirstIssue = o.FirstIssue
	}
}
