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

func lex(src string) ([]token, error) {
	var toks []token
	errAt := func(pos int, format string, a ...any) error {
		return &SyntaxError{Expr: src, Pos: pos, Msg: fmt.Sprintf(format, a...)}
	}
	i := 0
	for i < len(src) {
		c := src[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '/' && i+1 < len(src) && src[i+1] == '/':
			for i < len(src) && src[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < len(src) && src[i+1] == '*':
			end := strings.Index(src[i+2:], "*/")
			if end < 0 {
				return nil, errAt(i, "unterminated comment")
			}
			i += end + 4
		case isIdentStart(c):
			j := i + 1
			for j < len(src) && isIdentPart(src[j]) {
				j++
			}
			toks = append(toks, token{tIdent, src[i:j], i})
			i = j
		case c == '`':
			s, n, err := unquote(src, i, '`')
			if err != nil {
				return nil, err
			}
			toks = append(toks, token{tIdent, s, i})
			i += n
		case c == '\'':
			s, n, err := unquote(src, i, '\'')
			if err != nil {
				return nil, err
			}
			toks = append(toks, token{tString, s, i})
			i += n
		case c >= '0' && c <= '9':
			j := i
			for j < len(src) && src[j] >= '0' && src[j] <= '9' {
				j++
			}
			if j+1 < len(src) && src[j] == '.' && src[j+1] >= '0' && src[j+1] <= '9' {
				j++
				for j < len(src) && src[j] >= '0' && src[j] <= '9' {
					j++
				}
			}
			toks = append(toks, token{tNumber, src[i:j], i})
			i = j
		case c == '@':
			j := i + 1
			for j < len(src) {
				d := src[j]
				if (d >= '0' && d <= '9') || d == '-' || d == ':' || d == '+' || d == 'T' || d == 'Z' ||
					(d == '.' && j+1 < len(src) && src[j+1] >= '0' && src[j+1] <= '9') {
					j++
					continue
				}
				break
			}
			if j == i+1 {
				return nil, errAt(i, "empty date/time literal")
			}
			toks = append(toks, token{tDate, src[i+1 : j], i})
			i = j
		case c == '%':
			j := i + 1
			switch {
			case j < len(src) && isIdentStart(src[j]):
				k := j + 1
				for k < len(src) && isIdentPart(src[k]) {
					k++
				}
				toks = append(toks, token{tVar, src[j:k], i})
				i = k
			case j < len(src) && (src[j] == '`' || src[j] == '\''):
				s, n, err := unquote(src, j, src[j])
				if err != nil {
					return nil, err
				}
				toks = append(toks, token{tVar, s, i})
				i = j + n
			default:
				return nil, errAt(i, "bad variable name")
			}
		case c == '$':
			j := i + 1
			for j < len(src) && isIdentPart(src[j]) {
				j++
			}
			name := src[i:j]
			if name != "$this" && name != "$index" && name != "$total" {
				return nil, errAt(i, "unknown special variable %q", name)
			}
			toks = append(toks, token{tSpecial, name, i})
			i = j
		default:
			op := ""
			for _, cand := range []string{"<=", ">=", "!=", "!~", "{}"} {
				if strings.HasPrefix(src[i:], cand) {
					op = cand
					break
				}
			}
			if op == "" && strings.IndexByte(".[](),+-*/&|=~<>", c) >= 0 {
				op = src[i : i+1]
			}
			if op == "" {
				r, _ := utf8.DecodeRuneInString(src[i:])
				return nil, errAt(i, "unexpected character %q", r)
			}
			toks = append(toks, token{tOp, op, i})
			i += len(op)
		}
	}
	toks = append(toks, token{tEOF, "", len(src)})
	return toks, nil
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
		switch {
		case c == q:
			return b.String(), j + 1 - i, nil
		case c == '\\':
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
