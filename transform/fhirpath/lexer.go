package fhirpath

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

type tokKind uint8

const (
	tEOF tokKind = iota
	tIdent
	tString
	tNumber
	tDate // @2020-01-01, @2020-01-01T10:00, @T12:00
	tVar  // %name
	tSpecial
	tOp
)

type token struct {
	kind tokKind
	text string // identifier name, unescaped string, number text, operator
	pos  int
}

// SyntaxError reports a malformed expression and where.
type SyntaxError struct {
	Expr string
	Pos  int
	Msg  string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("fhirpath: %s at offset %d in %q", e.Msg, e.Pos, e.Expr)
}

// lexer scans one expression into tokens. Each scan method reads one
// token class starting at src[i] and returns where the next token starts.
type lexer struct {
	src  string
	toks []token
}

func lex(src string) ([]token, error) {
	lx := &lexer{src: src}
	for i := 0; i < len(src); {
		var err error
		if i, err = lx.scan(i); err != nil {
			return nil, err
		}
	}
	lx.emit(tEOF, "", len(src))
	return lx.toks, nil
}

func (lx *lexer) emit(kind tokKind, text string, pos int) {
	lx.toks = append(lx.toks, token{kind, text, pos})
}

func (lx *lexer) errAt(pos int, format string, a ...any) error {
	return &SyntaxError{Expr: lx.src, Pos: pos, Msg: fmt.Sprintf(format, a...)}
}

// scan dispatches on the first byte of what starts at src[i]: blanks and
// comments produce no token.
func (lx *lexer) scan(i int) (int, error) {
	src := lx.src
	c := src[i]
	switch {
	case c == ' ' || c == '\t' || c == '\n' || c == '\r':
		return i + 1, nil
	case c == '/' && i+1 < len(src) && (src[i+1] == '/' || src[i+1] == '*'):
		return lx.comment(i)
	case isIdentStart(c):
		return lx.ident(i), nil
	case c == '`':
		return lx.quoted(i, tIdent)
	case c == '\'':
		return lx.quoted(i, tString)
	case c >= '0' && c <= '9':
		return lx.number(i), nil
	case c == '@':
		return lx.dateTime(i)
	case c == '%':
		return lx.variable(i)
	case c == '$':
		return lx.special(i)
	}
	return lx.operator(i)
}

// comment skips a // line comment (up to the newline) or a /* */ block.
func (lx *lexer) comment(i int) (int, error) {
	src := lx.src
	if src[i+1] == '/' {
		for i < len(src) && src[i] != '\n' {
			i++
		}
		return i, nil
	}
	end := strings.Index(src[i+2:], "*/")
	if end < 0 {
		return 0, lx.errAt(i, "unterminated comment")
	}
	return i + end + 4, nil
}

// identEnd returns the end of the identifier characters starting at i.
func (lx *lexer) identEnd(i int) int {
	for i < len(lx.src) && isIdentPart(lx.src[i]) {
		i++
	}
	return i
}

func (lx *lexer) ident(i int) int {
	j := lx.identEnd(i + 1)
	lx.emit(tIdent, lx.src[i:j], i)
	return j
}

// quoted scans a 'string' or a `delimited identifier`.
func (lx *lexer) quoted(i int, kind tokKind) (int, error) {
	s, n, err := unquote(lx.src, i, lx.src[i])
	if err != nil {
		return 0, err
	}
	lx.emit(kind, s, i)
	return i + n, nil
}

// number scans an integer or decimal; a dot not followed by a digit is
// left for the invocation that follows (1.toString()).
func (lx *lexer) number(i int) int {
	src := lx.src
	j := digitsEnd(src, i)
	if j+1 < len(src) && src[j] == '.' && isDigit(src[j+1]) {
		j = digitsEnd(src, j+1)
	}
	lx.emit(tNumber, src[i:j], i)
	return j
}

// dateTime scans an @ date, dateTime or time literal; its text excludes
// the @.
func (lx *lexer) dateTime(i int) (int, error) {
	src := lx.src
	j := i + 1
	for j < len(src) && isDateTimeChar(src, j) {
		j++
	}
	if j == i+1 {
		return 0, lx.errAt(i, "empty date/time literal")
	}
	lx.emit(tDate, src[i+1:j], i)
	return j, nil
}

// isDateTimeChar reports whether src[j] continues a date/time literal;
// a dot does only before a fraction's digits.
func isDateTimeChar(src string, j int) bool {
	switch d := src[j]; d {
	case '-', ':', '+', 'T', 'Z':
		return true
	case '.':
		return j+1 < len(src) && isDigit(src[j+1])
	default:
		return isDigit(d)
	}
}

// variable scans %name, %`name` or %'name'.
func (lx *lexer) variable(i int) (int, error) {
	src := lx.src
	j := i + 1
	switch {
	case j < len(src) && isIdentStart(src[j]):
		k := lx.identEnd(j + 1)
		lx.emit(tVar, src[j:k], i)
		return k, nil
	case j < len(src) && (src[j] == '`' || src[j] == '\''):
		s, n, err := unquote(src, j, src[j])
		if err != nil {
			return 0, err
		}
		lx.emit(tVar, s, i)
		return j + n, nil
	}
	return 0, lx.errAt(i, "bad variable name")
}

// special scans $this, $index or $total.
func (lx *lexer) special(i int) (int, error) {
	j := lx.identEnd(i + 1)
	name := lx.src[i:j]
	if name != "$this" && name != "$index" && name != "$total" {
		return 0, lx.errAt(i, "unknown special variable %q", name)
	}
	lx.emit(tSpecial, name, i)
	return j, nil
}

// operator scans punctuation and symbolic operators, two-character ones
// first.
func (lx *lexer) operator(i int) (int, error) {
	src := lx.src
	op := ""
	for _, cand := range []string{"<=", ">=", "!=", "!~", "{}"} {
		if strings.HasPrefix(src[i:], cand) {
			op = cand
			break
		}
	}
	if op == "" && strings.IndexByte(".[](),+-*/&|=~<>", src[i]) >= 0 {
		op = src[i : i+1]
	}
	if op == "" {
		r, _ := utf8.DecodeRuneInString(src[i:])
		return 0, lx.errAt(i, "unexpected character %q", r)
	}
	lx.emit(tOp, op, i)
	return i + len(op), nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// digitsEnd returns the end of the run of digits starting at i.
func digitsEnd(src string, i int) int {
	for i < len(src) && isDigit(src[i]) {
		i++
	}
	return i
}

func isIdentStart(c byte) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func isIdentPart(c byte) bool { return isIdentStart(c) || (c >= '0' && c <= '9') }

// unquote reads a quoted string starting at src[i] (the quote) and returns
// its unescaped content and the number of bytes consumed.
func unquote(src string, i int, q byte) (string, int, error) {
	var b strings.Builder
	j := i + 1
	for j < len(src) {
		c := src[j]
		switch c {
		case q:
			return b.String(), j + 1 - i, nil
		case '\\':
			if j+1 >= len(src) {
				return "", 0, &SyntaxError{Expr: src, Pos: j, Msg: "unterminated escape"}
			}
			e := src[j+1]
			j += 2
			switch e {
			case 't':
				b.WriteByte('\t')
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 'f':
				b.WriteByte('\f')
			case '\'', '"', '`', '\\', '/':
				b.WriteByte(e)
			case 'u':
				if j+4 > len(src) {
					return "", 0, &SyntaxError{Expr: src, Pos: j, Msg: "bad \\u escape"}
				}
				n, err := strconv.ParseUint(src[j:j+4], 16, 32)
				if err != nil {
					return "", 0, &SyntaxError{Expr: src, Pos: j, Msg: "bad \\u escape"}
				}
				b.WriteRune(rune(n))
				j += 4
			default:
				return "", 0, &SyntaxError{Expr: src, Pos: j - 1, Msg: fmt.Sprintf("unknown escape \\%c", e)}
			}
		default:
			b.WriteByte(c)
			j++
		}
	}
	return "", 0, &SyntaxError{Expr: src, Pos: i, Msg: "unterminated string"}
}
