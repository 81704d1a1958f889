// Package txnguard holds the bookkeeping every sink's Txn and ReplaceTable
// do around a write, so that the contract's ownership and error rules are
// kept the same way by each sink.
package txnguard

import (
	"context"
	"errors"
	"fmt"

	"github.com/fhirferry/fhirferry/schemas"
	"github.com/fhirferry/fhirferry/sinks"
)

// Guard is a Txn's state as Write sees it. Its zero value is a live Txn.
type Guard struct {
	// Done: Commit or Rollback ran; every later Write is ErrTxnDone.
	Done bool
	// Noop: the sink already holds the run's export; writes are dropped.
	Noop bool
	// Err is the first write error; later writes return it.
	Err error
}

// Write releases b and, unless the Txn ended, failed before, is a no-op
// or b has no rows, passes it to write. A failure of write is kept (the
// Txn cannot commit a partial batch), prefixed with the sink's name.
func (g *Guard) Write(ctx context.Context, sink string, b schemas.Batch, write func(context.Context, schemas.Batch) error) error {
	defer b.Release()
	if g.Done {
		return sinks.ErrTxnDone
	}
	if g.Err != nil {
		return g.Err
	}
	if g.Noop || b.Rec == nil || b.Rec.NumRows() == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := write(ctx, b); err != nil {
		g.Err = fmt.Errorf("%s: write %s: %w", sink, tableName(b.Table), err)
		return g.Err
	}
	return nil
}

// ReplaceEmit is the emit a ReplaceTable hands its producer: it takes
// ownership of each batch, checks that it belongs to t, has rows and, for
// a table with a namespace, says whose rows they are, and passes it to
// write (which must not release it).
func ReplaceEmit(ctx context.Context, t *schemas.Table, write func(schemas.Batch) error) func(schemas.Batch) error {
	return func(b schemas.Batch) error {
		defer b.Release()
		if err := ctx.Err(); err != nil {
			return err
		}
		if b.Table != t && (b.Table == nil || b.Table.Name != t.Name) {
			return fmt.Errorf("batch for table %s, not %s", tableName(b.Table), t.Name)
		}
		if b.Rec == nil {
			return errors.New("batch without rows")
		}
		if len(t.Stamped()) > 0 && b.Namespace == "" {
			return fmt.Errorf("batch for table %s without a namespace", t.Name)
		}
		return write(b)
	}
}

// CheckReplaceable rejects a ReplaceTable of no table or of the staged-only
// deleted table.
func CheckReplaceable(sink string, t *schemas.Table) error {
	if t == nil || t.Kind == schemas.KindDeleted {
		return fmt.Errorf("%s: replace table: not a stored table", sink)
	}
	return nil
}

func tableName(t *schemas.Table) string {
	if t == nil {
		return "<nil>"
	}
	return t.Name
}
