package transform

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/gzip"
)

// ErrLineTooLong reports a line above the reader's maximum. The reader has
// skipped it and can go on with the next line.
var ErrLineTooLong = errors.New("line exceeds the maximum line length")

// LineReader streams the lines of an NDJSON file. Lines may end in \n or
// \r\n, the last line needs no newline, and blank lines are skipped. A line
// longer than the maximum is skipped and reported once, so one bad line
// never stops a file.
type LineReader struct {
	r    *bufio.Reader
	max  int
	buf  []byte
	line int64
}

// NewLineReader reads from r; maxLine bounds one line (and so memory).
func NewLineReader(r io.Reader, maxLine int) *LineReader {
	if pf, ok := r.(*plainFile); ok {
		// Open's buffer already holds the file: a second one would copy
		// every byte once more.
		return &LineReader{r: pf.Reader, max: maxLine}
	}
	return &LineReader{r: bufio.NewReaderSize(r, 1<<20), max: maxLine}
}

// Next returns the next non-blank line and its 1-based number. The slice is
// valid until the next call. At the end it returns io.EOF.
func (lr *LineReader) Next() ([]byte, int64, error) {
	for {
		lr.buf = lr.buf[:0]
		tooLong := false
		for {
			chunk, err := lr.r.ReadSlice('\n')
			if !tooLong {
				if len(lr.buf)+len(chunk) > lr.max+2 { // +2: the line ending is not content
					tooLong = true
					lr.buf = lr.buf[:0]
				} else {
					lr.buf = append(lr.buf, chunk...)
				}
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				continue
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return nil, lr.line, err
			}
			if len(chunk) == 0 && len(lr.buf) == 0 && !tooLong && errors.Is(err, io.EOF) {
				return nil, lr.line, io.EOF
			}
			break
		}
		lr.line++
		if tooLong {
			return nil, lr.line, fmt.Errorf("line %d: %w (%d bytes)", lr.line, ErrLineTooLong, lr.max)
		}
		line := bytes.TrimRight(lr.buf, "\r\n")
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		return line, lr.line, nil
	}
}

// Open opens an NDJSON file for reading, decompressing it when it is gzip
// (the spool format), whatever its name.
func Open(path string) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(f, 1<<20)
	magic, _ := br.Peek(2)
	if len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return &gzipFile{zr: zr, f: f}, nil
	}
	return &plainFile{Reader: br, f: f}, nil
}

type gzipFile struct {
	zr *gzip.Reader
	f  *os.File
}

func (g *gzipFile) Read(p []byte) (int, error) { return g.zr.Read(p) }
func (g *gzipFile) Close() error               { return errors.Join(g.zr.Close(), g.f.Close()) }

type plainFile struct {
	*bufio.Reader
	f *os.File
}

func (p *plainFile) Close() error { return p.f.Close() }
