package fhirpath

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Precisions of a temporal value, coarse to fine. Seconds and fractions
// count as one precision, as FHIRPath compares them together.
const (
	precYear = iota + 1
	precMonth
	precDay
	precHour
	precMinute
	precSecond
)

// temporal is a parsed FHIR date, dateTime, instant or time.
type temporal struct {
	k          Kind
	f          [6]int // year, month, day, hour, minute, second
	nanos      int
	fracDigits int
	prec       int
	hasTZ      bool
	tzMin      int
	timeOnly   bool
}

var errBadTemporal = errors.New("not a valid FHIR date, dateTime or time")

func digits(s string, n int) (int, bool) {
	if len(s) < n {
		return 0, false
	}
	v := 0
	for i := 0; i < n; i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int(c-'0')
	}
	return v, true
}

// parseTemporal parses FHIR lexical forms: YYYY[-MM[-DD[Thh[:mm[:ss[.fff]]][tz]]]]
// or hh:mm[:ss[.fff]] for times (want selects which to accept).
func parseTemporal(s string, want Kind) (temporal, error) {
	var t temporal
	if want == KindTime {
		t.k, t.timeOnly = KindTime, true
		rest, err := t.parseClock(s, 1)
		if err != nil || rest != "" {
			return t, errBadTemporal
		}
		return t, nil
	}
	s, err := t.parseDate(s)
	if err != nil || s == "" {
		return t, err
	}
	if s[0] != 'T' {
		return t, errBadTemporal
	}
	t.k = KindDateTime
	s = s[1:]
	if s == "" { // FHIRPath partial dateTime literal @2020-01-01T
		return t, nil
	}
	rest, err := t.parseClock(s, 1)
	if err != nil {
		return t, err
	}
	err = t.parseZone(rest)
	return t, err
}

// parseDate parses YYYY[-MM[-DD]] and returns the rest of s.
func (t *temporal) parseDate(s string) (string, error) {
	y, ok := digits(s, 4)
	if !ok {
		return s, errBadTemporal
	}
	t.f[0], t.prec, t.k = y, precYear, KindDate
	s = s[4:]
	for _, idx := range []int{1, 2} {
		if len(s) == 0 || s[0] != '-' {
			break
		}
		v, ok := digits(s[1:], 2)
		if !ok || len(s) > 3 && s[3] >= '0' && s[3] <= '9' {
			return s, errBadTemporal
		}
		t.f[idx], t.prec = v, idx+1
		s = s[3:]
	}
	if t.prec >= precMonth && (t.f[1] < 1 || t.f[1] > 12) {
		return s, errBadTemporal
	}
	if t.prec >= precDay && (t.f[2] < 1 || t.f[2] > daysIn(t.f[0], t.f[1])) {
		return s, errBadTemporal
	}
	return s, nil
}

// parseZone parses what follows the clock: nothing, Z or ±hh:mm.
func (t *temporal) parseZone(s string) error {
	switch {
	case s == "":
		return nil
	case s == "Z":
		t.hasTZ = true
		return nil
	case (s[0] == '+' || s[0] == '-') && len(s) == 6 && s[3] == ':':
		h, ok1 := digits(s[1:], 2)
		m, ok2 := digits(s[4:], 2)
		if !ok1 || !ok2 || h > 14 || m > 59 {
			return errBadTemporal
		}
		t.hasTZ, t.tzMin = true, h*60+m
		if s[0] == '-' {
			t.tzMin = -t.tzMin
		}
		return nil
	}
	return errBadTemporal
}

// parseClock parses hh[:mm[:ss[.fff]]] requiring at least minParts parts.
func (t *temporal) parseClock(s string, minParts int) (string, error) {
	h, ok := digits(s, 2)
	if !ok || h > 23 {
		return s, errBadTemporal
	}
	t.f[3], t.prec = h, precHour
	s = s[2:]
	parts := 1
	for _, idx := range []int{4, 5} {
		if len(s) == 0 || s[0] != ':' {
			break
		}
		v, ok := digits(s[1:], 2)
		if !ok || v > 59 {
			return s, errBadTemporal
		}
		t.f[idx], t.prec = v, idx+1
		s = s[3:]
		parts++
	}
	if parts < minParts {
		return s, errBadTemporal
	}
	if t.prec == precSecond && len(s) > 1 && s[0] == '.' {
		j := 1
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		if j == 1 {
			return s, errBadTemporal
		}
		frac := s[1:j]
		t.fracDigits = len(frac)
		if len(frac) > 9 {
			frac = frac[:9]
		}
		n, _ := strconv.Atoi(frac + strings.Repeat("0", 9-len(frac)))
		t.nanos = n
		s = s[j:]
	}
	return s, nil
}

func daysIn(y, m int) int {
	return time.Date(y, time.Month(m)+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

// temporalLiteralKind classifies the text after '@' in a FHIRPath literal.
func temporalLiteralKind(s string) (Kind, error) {
	if strings.HasPrefix(s, "T") {
		if _, err := parseTemporal(s[1:], KindTime); err != nil {
			return 0, fmt.Errorf("bad time literal @%s", s)
		}
		return KindTime, nil
	}
	t, err := parseTemporal(s, KindDateTime)
	if err != nil {
		return 0, fmt.Errorf("bad date/time literal @%s", s)
	}
	return t.k, nil
}

// guessTemporal infers the kind of an untyped string from its shape.
func guessTemporal(s string) (temporal, bool) {
	if len(s) >= 5 && s[2] == ':' {
		t, err := parseTemporal(s, KindTime)
		return t, err == nil
	}
	t, err := parseTemporal(s, KindDateTime)
	return t, err == nil
}

// utc returns the instant of t (time part in UTC; a missing zone is taken
// as UTC) for values with hour precision or finer.
func (t temporal) normalised() temporal {
	if t.timeOnly || t.prec < precHour || !t.hasTZ || t.tzMin == 0 {
		return t
	}
	tm := time.Date(t.f[0], time.Month(max(t.f[1], 1)), max(t.f[2], 1), t.f[3], t.f[4], t.f[5], 0, time.UTC)
	tm = tm.Add(-time.Duration(t.tzMin) * time.Minute)
	t.f = [6]int{tm.Year(), int(tm.Month()), tm.Day(), tm.Hour(), tm.Minute(), tm.Second()}
	t.tzMin = 0
	return t
}

// compareTemporal orders a and b; ok is false when the answer depends on
// precision the values lack (FHIRPath returns empty then).
func compareTemporal(a, b temporal) (int, bool) {
	if a.timeOnly != b.timeOnly {
		return 0, false
	}
	a, b = a.normalised(), b.normalised()
	first := 0
	if a.timeOnly {
		first = 3
	}
	p := min(a.prec, b.prec)
	for i := first; i < p; i++ {
		if c := cmpInt(a.f[i], b.f[i]); c != 0 {
			return c, true
		}
	}
	if a.prec != b.prec {
		return 0, false
	}
	return cmpInt(a.nanos, b.nanos), true
}

// boundary computes lowBoundary (high=false) or highBoundary of a temporal.
func (t temporal) boundary(high bool) string {
	var b strings.Builder
	if !t.timeOnly {
		y, m, d := t.f[0], t.f[1], t.f[2]
		if t.prec < precMonth {
			m = 1
			if high {
				m = 12
			}
		}
		if t.prec < precDay {
			d = 1
			if high {
				d = daysIn(y, m)
			}
		}
		fmt.Fprintf(&b, "%04d-%02d-%02d", y, m, d)
		if t.k == KindDate {
			return b.String()
		}
		b.WriteByte('T')
	}
	h, mi, s, ns := t.f[3], t.f[4], t.f[5], t.nanos
	if t.prec < precHour && high {
		h = 23
	}
	if t.prec < precMinute && high {
		mi = 59
	}
	if t.prec < precSecond && high {
		s = 59
	}
	ms := ns / 1e6
	if t.prec < precSecond || t.fracDigits == 0 {
		ms = 0
		if high {
			ms = 999
		}
	}
	fmt.Fprintf(&b, "%02d:%02d:%02d.%03d", h, mi, s, ms)
	if t.timeOnly {
		return b.String()
	}
	switch {
	case t.hasTZ:
		sign := '+'
		tz := t.tzMin
		if tz < 0 {
			sign, tz = '-', -tz
		}
		fmt.Fprintf(&b, "%c%02d:%02d", sign, tz/60, tz%60)
	case high:
		b.WriteString("-12:00")
	default:
		b.WriteString("+14:00")
	}
	return b.String()
}

// ParseInstant converts a FHIR dateTime or instant with at least second
// precision to a time.Time; a missing zone is read as UTC. It reports false
// for partial values.
func ParseInstant(s string) (time.Time, bool) {
	t, err := parseTemporal(s, KindDateTime)
	if err != nil || t.k != KindDateTime || t.prec < precSecond {
		return time.Time{}, false
	}
	loc := time.UTC
	if t.hasTZ && t.tzMin != 0 {
		loc = time.FixedZone("", t.tzMin*60)
	}
	return time.Date(t.f[0], time.Month(t.f[1]), t.f[2], t.f[3], t.f[4], t.f[5], t.nanos, loc), true
}

// ParseDate converts a complete FHIR date (YYYY-MM-DD) to days since the
// Unix epoch; partial dates report false.
func ParseDate(s string) (int32, bool) {
	t, err := parseTemporal(s, KindDate)
	if err != nil || t.k != KindDate || t.prec != precDay {
		return 0, false
	}
	d := time.Date(t.f[0], time.Month(t.f[1]), t.f[2], 0, 0, 0, 0, time.UTC)
	return int32(d.Unix() / 86400), true
}

// ParseTime converts a FHIR time (hh:mm:ss[.fff]) to nanoseconds after
// midnight.
func ParseTime(s string) (int64, bool) {
	t, err := parseTemporal(s, KindTime)
	if err != nil || t.prec != precSecond {
		return 0, false
	}
	return int64(t.f[3])*3600e9 + int64(t.f[4])*60e9 + int64(t.f[5])*1e9 + int64(t.nanos), true
}

// ValidTemporal reports whether s is a valid FHIR value of kind k
// (KindDate, KindDateTime or KindTime).
func ValidTemporal(k Kind, s string) bool {
	if k == KindTime {
		_, err := parseTemporal(s, KindTime)
		return err == nil
	}
	t, err := parseTemporal(s, KindDateTime)
	return err == nil && (k != KindDate || t.k == KindDate)
}

// LowBoundaryUTC returns the earliest complete value a partial date,
// dateTime (kind KindDateTime) or time (KindTime) covers, with a missing
// zone read as UTC: 1970-06 → 1970-06-01T00:00:00.000Z.
func LowBoundaryUTC(s string, kind Kind) (string, bool) {
	t, err := parseTemporal(s, kind)
	if err != nil {
		return "", false
	}
	if kind == KindTime {
		return t.boundary(false), true
	}
	t.k = KindDateTime
	if !t.hasTZ {
		t.hasTZ, t.tzMin = true, 0
	}
	return t.boundary(false), true
}
