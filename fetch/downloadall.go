package fetch

import (
	"context"
	"fmt"
	"path/filepath"

	"golang.org/x/sync/errgroup"
)

// DownloadAll downloads every file of m into dir (named by SpoolName) with
// Options.Parallel workers. For each file, skip is asked first: if it
// returns true the file is already stored and its Spooled is passed on
// as is. done is called for every file, downloaded or skipped, as soon as
// it is stored, from the calling goroutine only (never concurrently), in
// completion order. done may block: that is the backpressure into the
// transform, and at most Parallel finished files wait for it. The first
// error from a download or from done cancels the rest and is returned.
// skip may be nil.
func (c *Client) DownloadAll(ctx context.Context, m *Manifest, dir string, skip func(File) (Spooled, bool), done func(Spooled) error) error {
	files := m.Files()
	g, gctx := errgroup.WithContext(ctx)
	jobs := make(chan File)
	results := make(chan Spooled, c.o.Parallel)
	g.Go(func() error {
		defer close(jobs)
		for _, f := range files {
			select {
			case jobs <- f:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	workers, wctx := errgroup.WithContext(gctx)
	for i := 0; i < c.o.Parallel; i++ {
		workers.Go(func() error {
			for f := range jobs {
				var sp Spooled
				ok := false
				if skip != nil {
					sp, ok = skip(f)
				}
				if !ok {
					var err error
					if sp, err = c.Download(wctx, m, f, filepath.Join(dir, SpoolName(f))); err != nil {
						return fmt.Errorf("%s file %d (%s): %w", f.Kind, f.Index, f.Type, err)
					}
				}
				select {
				case results <- sp:
				case <-wctx.Done():
					return wctx.Err()
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		defer close(results)
		return workers.Wait()
	})
	var doneErr error
	for sp := range results {
		if doneErr != nil {
			continue // drain so workers can exit
		}
		if err := done(sp); err != nil {
			doneErr = err
			g.Go(func() error { return err }) // cancels gctx
		}
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return doneErr
}
