package duckdb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/fhirferry/fhirferry/sinks"
)

// Readers and the writer never share a file. DuckDB lets one process open
// a file for writing and refuses every other open meanwhile, even
// read-only, so an analyst could not query the warehouse a daemon keeps
// fresh. The sink therefore writes a working copy (WriterPath) and, after
// each commit, publishes it at the configured path: CHECKPOINT (the WAL
// folded into the file), a copy beside the target (copy_file_range: a
// reflink where the file system has them), fsync, rename. A reader opens
// the published file read-only at any time and sees the state of one
// commit: a rename never changes a file a reader has open, and a new open
// sees the next commit whole.

var _ sinks.Flusher = (*Sink)(nil)

// adopt makes a warehouse written before snapshots (its file at published,
// no working copy yet) the working copy; its .wal goes with it.
func adopt(published, writer string) error {
	if _, err := os.Stat(writer); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if _, err := os.Stat(published); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := os.Rename(published, writer); err != nil {
		return fmt.Errorf("adopt %s as the working copy: %w", published, err)
	}
	if err := os.Rename(published+".wal", writer+".wal"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("adopt %s.wal: %w", published, err)
	}
	return nil
}

// Flush implements sinks.Flusher: it publishes the working copy when it
// has changes the published copy lacks.
func (s *Sink) Flush(ctx context.Context) error {
	if s.published == "" || !s.dirty.Load() {
		return nil
	}
	if err := s.acquire(ctx); err != nil {
		return err
	}
	defer s.release()
	return s.publish(ctx)
}

// publish copies the checkpointed working copy to the published path. The
// caller holds the writer slot.
func (s *Sink) publish(ctx context.Context) error {
	if s.published == "" {
		return nil
	}
	t0 := time.Now()
	raised, err := s.commitMemoryOn(ctx)
	if err == nil {
		// The checkpoint rewrites the row groups the run changed: part of
		// the commit, after the transform.
		_, err = s.db.ExecContext(ctx, "CHECKPOINT")
		err = errors.Join(err, s.commitMemoryOff(raised))
	}
	if err != nil {
		s.dirty.Store(true)
		return fmt.Errorf("duckdb sink %s: publish: checkpoint: %w", s.name, err)
	}
	n, err := copyAtomic(s.path, s.published)
	if err != nil {
		s.dirty.Store(true)
		return fmt.Errorf("duckdb sink %s: publish %s: %w", s.name, s.published, err)
	}
	s.dirty.Store(false)
	s.log.Debug("published the warehouse", "path", s.published, "bytes", n, "duration", time.Since(t0))
	return nil
}

// copyAtomic copies src to dst through a temporary file in dst's folder
// and a rename, so dst is the old file or the new one, never a mix.
func copyAtomic(src, dst string) (int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".publish-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	n, err := io.Copy(tmp, in)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		return 0, err
	}
	if d, err := os.Open(filepath.Dir(dst)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return n, nil
}
