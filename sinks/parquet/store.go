package parquet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Store holds the lake's objects. Names are slash-separated paths relative
// to the lake root. The local filesystem implements it here; an S3-compatible
// store can follow: Create maps to a (multipart) PUT that becomes visible at
// Close, Open to ranged GETs, Rename of the metadata file to a conditional
// PUT (or copy + delete), List and Delete to their S3 namesakes.
type Store interface {
	// Create starts writing an object; it becomes visible, whole, when Close
	// returns nil. An object abandoned without Close never appears.
	Create(ctx context.Context, name string) (ObjectWriter, error)
	// Open opens an object for random access (Parquet footers are read first).
	Open(ctx context.Context, name string) (Object, error)
	// List returns the names of every object under prefix, sorted.
	List(ctx context.Context, prefix string) ([]string, error)
	// Rename atomically replaces to with from: readers see the old or the
	// new object, never a mix or nothing.
	Rename(ctx context.Context, from, to string) error
	// Delete removes an object; a missing one is not an error.
	Delete(ctx context.Context, name string) error
	// Location is how a query engine outside fhirferry addresses the object
	// (an absolute path, or a URL such as s3://bucket/key).
	Location(name string) string
}

// ObjectWriter writes one object. Close publishes it; Abort discards it.
type ObjectWriter interface {
	io.Writer
	Close() error
	Abort() error
}

// Object is an opened object.
type Object interface {
	io.Reader
	io.ReaderAt
	io.Seeker
	io.Closer
}

// DirStore is a Store in a local directory.
type DirStore struct {
	root string
}

// NewDirStore returns a store rooted at dir, creating it if needed.
func NewDirStore(dir string) (*DirStore, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, err
	}
	return &DirStore{root: abs}, nil
}

func (d *DirStore) path(name string) (string, error) {
	clean := path.Clean("/" + name)[1:]
	if clean == "" || clean != name {
		return "", fmt.Errorf("object name %q is not a clean relative path", name)
	}
	return filepath.Join(d.root, filepath.FromSlash(clean)), nil
}

// Location implements Store.
func (d *DirStore) Location(name string) string {
	return filepath.Join(d.root, filepath.FromSlash(name))
}

type dirWriter struct {
	f         *os.File
	tmp, dest string
	closed    bool
}

func (w *dirWriter) Write(p []byte) (int, error) { return w.f.Write(p) }

// Close syncs the file and renames it into place.
func (w *dirWriter) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	err := w.f.Sync()
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(w.tmp, w.dest)
	}
	if err != nil {
		_ = os.Remove(w.tmp)
	}
	return err
}

// Abort discards the unfinished file.
func (w *dirWriter) Abort() error {
	if w.closed {
		return nil
	}
	w.closed = true
	_ = w.f.Close()
	return os.Remove(w.tmp)
}

// Create implements Store: it writes a hidden temporary file next to the
// destination and renames it on Close.
func (d *DirStore) Create(ctx context.Context, name string) (ObjectWriter, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	dest, err := d.path(name)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return nil, err
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	tmp := filepath.Join(filepath.Dir(dest), "."+filepath.Base(dest)+".tmp-"+hex.EncodeToString(b))
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	return &dirWriter{f: f, tmp: tmp, dest: dest}, nil
}

// Open implements Store.
func (d *DirStore) Open(ctx context.Context, name string) (Object, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p, err := d.path(name)
	if err != nil {
		return nil, err
	}
	return os.Open(p)
}

// List implements Store. Temporary files of unfinished writes are skipped.
func (d *DirStore) List(ctx context.Context, prefix string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(d.root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			return nil
		}
		rel, err := filepath.Rel(d.root, p)
		if err != nil {
			return err
		}
		if rel = filepath.ToSlash(rel); strings.HasPrefix(rel, prefix) {
			out = append(out, rel)
		}
		return nil
	})
	return out, err
}

// sweepTemp removes what writes cut short by a crash left behind: the
// hidden temporary files of Create (List never shows them, so collect
// cannot) and the staging folders left empty. Call it only while nothing
// writes to the lake (at start: one process writes a lake at a time).
func (d *DirStore) sweepTemp(ctx context.Context) error {
	var dirs []string
	err := filepath.WalkDir(d.root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if e.IsDir() {
			if rel, err := filepath.Rel(d.root, p); err == nil && strings.HasPrefix(filepath.ToSlash(rel)+"/", stagingDir) && rel+"/" != stagingDir {
				dirs = append(dirs, p)
			}
			return nil
		}
		if strings.HasPrefix(e.Name(), ".") && strings.Contains(e.Name(), ".tmp-") {
			return os.Remove(p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		_ = os.Remove(dirs[i]) // fails, as it should, on a folder that is not empty
	}
	return err
}

// Rename implements Store with rename(2), then syncs the directory so the
// new name survives a power loss.
func (d *DirStore) Rename(ctx context.Context, from, to string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	pf, err := d.path(from)
	if err != nil {
		return err
	}
	pt, err := d.path(to)
	if err != nil {
		return err
	}
	if err := os.Rename(pf, pt); err != nil {
		return err
	}
	dir, err := os.Open(filepath.Dir(pt))
	if err != nil {
		return err
	}
	defer dir.Close()
	return dir.Sync()
}

// Delete implements Store.
func (d *DirStore) Delete(ctx context.Context, name string) error {
	p, err := d.path(name)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	// Prune directories left empty (a run's staging folder); a non-empty
	// one refuses, which ends the walk.
	for dir := filepath.Dir(p); dir != d.root && strings.HasPrefix(dir, d.root); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil {
			break
		}
	}
	return nil
}

var _ Store = (*DirStore)(nil)
