package fetch

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/valyala/fastjson"
)

// lineTooLongError is a line over the reader's maximum, which it has
// skipped: reading may go on with the next line.
type lineTooLongError struct{ line, max int64 }

func (e *lineTooLongError) Error() string {
	return fmt.Sprintf("line %d is longer than the %d-byte limit (max_line_bytes)", e.line, e.max)
}

// skipLong discards the rest of a line over the maximum, without holding
// it, and returns its error (or the read error that cut it).
func (l *lineReader) skipLong() error {
	l.long = nil // up to max bytes: not worth keeping for the next line
	l.n++
	for {
		_, err := l.r.ReadSlice('\n')
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err != nil && err != io.EOF:
			return err
		}
		return &lineTooLongError{line: l.n, max: l.max}
	}
}

// lineReader streams NDJSON: lines end in \n or \r\n, blank lines are
// skipped, the last line needs no newline, and a line may be as long as max
// bytes (no small fixed limit, C39).
type lineReader struct {
	r    *bufio.Reader
	max  int64
	long []byte // assembles lines longer than the bufio buffer
	n    int64  // physical line number of the last line returned
}

func newLineReader(r io.Reader, max int64) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 256<<10), max: max}
}

// next returns the next non-blank line without its line ending. The slice
// is valid until the following call. At the end it returns io.EOF.
func (l *lineReader) next() ([]byte, error) {
	for {
		line, err := l.r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			l.long = append(l.long[:0], line...)
			for errors.Is(err, bufio.ErrBufferFull) {
				if int64(len(l.long)) > l.max+2 {
					return nil, l.skipLong()
				}
				line, err = l.r.ReadSlice('\n')
				l.long = append(l.long, line...)
			}
			line = l.long
		}
		if err != nil && err != io.EOF {
			return nil, err
		}
		if len(line) == 0 && err == io.EOF {
			return nil, io.EOF
		}
		l.n++
		if int64(len(line)) > l.max+2 { // +2: the line ending is not content
			return nil, &lineTooLongError{line: l.n, max: l.max}
		}
		t := bytes.TrimRight(line, "\r\n")
		if len(bytes.TrimSpace(t)) == 0 {
			if err == io.EOF {
				return nil, io.EOF
			}
			continue
		}
		return t, nil
	}
}

var rtPrefix = []byte(`{"resourceType":"`)

// resourceType returns a line's top-level resourceType. The common
// serialisation (resourceType first) is read without parsing; anything
// else goes through fastjson. ok is false for invalid JSON or no type.
func resourceType(p *fastjson.Parser, line []byte) (rt []byte, ok bool) {
	if bytes.HasPrefix(line, rtPrefix) {
		rest := line[len(rtPrefix):]
		if i := bytes.IndexByte(rest, '"'); i > 0 && bytes.IndexByte(rest[:i], '\\') < 0 {
			return rest[:i], true
		}
	}
	v, err := p.ParseBytes(line)
	if err != nil {
		return nil, false
	}
	b := v.GetStringBytes("resourceType")
	return b, len(b) > 0
}
