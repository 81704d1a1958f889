package bulktest

import (
	"encoding/binary"
	"encoding/hex"
	"math"
	"strconv"
	"time"
)

// Resource types the generator produces. The order is the manifest order.
const (
	tPatient = iota
	tEncounter
	tObservation
	tCondition
	tMedicationRequest
	tProcedure
	tImmunization
	tAllergyIntolerance
	tDiagnosticReport
	tDocumentReference
	tClaim
	tExplanationOfBenefit
	tCoverage
	numPatientTypes // types above live in the Patient compartment
	tPractitioner   = numPatientTypes
	tOrganization   = numPatientTypes + 1
	tLocation       = numPatientTypes + 2
	tGroup          = numPatientTypes + 3
	numTypes        = numPatientTypes + 4
)

var typeNames = [numTypes]string{
	"Patient", "Encounter", "Observation", "Condition", "MedicationRequest", "Procedure",
	"Immunization", "AllergyIntolerance", "DiagnosticReport", "DocumentReference", "Claim",
	"ExplanationOfBenefit", "Coverage", "Practitioner", "Organization", "Location", "Group",
}

var typeIndex = func() map[string]int {
	m := make(map[string]int, numTypes)
	for i, n := range typeNames {
		m[n] = i
	}
	return m
}()

const (
	groupAll    = "all"
	groupCohort = "cohort"
)

// mix is SplitMix64's finaliser: a cheap, well-distributed 64-bit hash.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

func hash4(seed, a, b, c uint64) uint64 {
	return mix(mix(mix(seed^a*0x9e3779b97f4a7c15)^b*0xd6e8feb86659fd93) ^ c*0xa0761d6478bd642f)
}

// generator holds what every resource depends on besides its coordinates.
type generator struct {
	seed     uint64
	start    time.Time
	mask     uint64 // obscures the coordinates encoded in ids
	nPract   int
	nOrg     int
	nLoc     int
	cohortPc uint64 // initial cohort share, percent
}

func newGenerator(seed int64, start time.Time) *generator {
	s := mix(uint64(seed) ^ 0x5eed)
	return &generator{seed: s, start: start, mask: mix(s ^ 0x1d5), cohortPc: 70}
}

// setPools sizes the shared Practitioner/Organization/Location pools from
// the initial patient count; they never change afterwards.
func (g *generator) setPools(patients int) {
	g.nPract = max(10, patients/20)
	g.nOrg = max(5, patients/50)
	g.nLoc = g.nOrg
}

func (g *generator) poolSize(typ int) int {
	switch typ {
	case tPractitioner:
		return g.nPract
	case tOrganization:
		return g.nOrg
	case tLocation:
		return g.nLoc
	}
	return 0
}

// ovKey packs a resource's coordinates; it is also what its id encodes.
func ovKey(typ int, p uint32, ord int) uint64 {
	return uint64(typ)<<56 | uint64(p)<<24 | uint64(ord)&0xffffff
}

func splitKey(k uint64) (typ int, p uint32, ord int) {
	return int(k >> 56), uint32(k >> 24), int(k & 0xffffff)
}

// appendID appends the UUID-shaped id of a resource. The last 8 bytes
// carry (patient, type, ordinal) under a mask, so ids can be parsed back;
// the first 8 are a checksum, so made-up ids are rejected.
func (g *generator) appendID(b []byte, typ int, p uint32, ord int) []byte {
	var raw [16]byte
	binary.BigEndian.PutUint64(raw[:8], hash4(g.seed, uint64(typ), uint64(p), uint64(ord)))
	raw[6] = raw[6]&0x0f | 0x40 // version 4
	// The coordinates are masked with a hash of the first half, so ids
	// look random but stay reversible.
	lo := (uint64(p)<<32 | uint64(typ)<<24 | uint64(ord)&0xffffff) ^ g.mask ^ mix(binary.BigEndian.Uint64(raw[:8]))
	binary.BigEndian.PutUint64(raw[8:], lo)
	raw[8] = raw[8]&0x3f | 0x80 // RFC 4122 variant
	var out [36]byte
	hex.Encode(out[0:8], raw[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], raw[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], raw[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], raw[8:10])
	out[23] = '-'
	hex.Encode(out[24:36], raw[10:16])
	return append(b, out[:]...)
}

func (g *generator) id(typ int, p uint32, ord int) string {
	return string(g.appendID(make([]byte, 0, 36), typ, p, ord))
}

// parseID reverses appendID; ok is false for ids this generator did not make.
func (g *generator) parseID(id string) (typ int, p uint32, ord int, ok bool) {
	if len(id) != 36 || id[8] != '-' || id[13] != '-' || id[18] != '-' || id[23] != '-' {
		return 0, 0, 0, false
	}
	var raw [16]byte
	h := []byte(id[0:8] + id[9:13] + id[14:18] + id[19:23] + id[24:36])
	if _, err := hex.Decode(raw[:], h); err != nil {
		return 0, 0, 0, false
	}
	lo := binary.BigEndian.Uint64(raw[8:]) ^ g.mask ^ mix(binary.BigEndian.Uint64(raw[:8]))
	p = uint32(lo>>32) & 0x3fffffff
	typ = int(lo >> 24 & 0xff)
	ord = int(lo & 0xffffff)
	if typ >= numTypes || g.id(typ, p, ord) != id {
		return 0, 0, 0, false
	}
	return typ, p, ord, true
}

// profile is everything about one patient that several resources share.
// It is cheap to compute and never stored.
type profile struct {
	p       uint32
	h       uint64
	created time.Time // non-zero for patients created by Advance
	nEnc    int
	counts  [numPatientTypes]int
	female  bool
	birth   time.Time
}

func (g *generator) profile(p uint32, created time.Time) profile {
	h := hash4(g.seed, 0xfeed, uint64(p), 0)
	pr := profile{p: p, h: h, created: created}
	pr.nEnc = 2 + int(h%11)
	pr.female = h>>8&1 == 1
	ageDays := 365*2 + int(h>>16%(365*85))
	pr.birth = g.start.AddDate(0, 0, -ageDays).Truncate(24 * time.Hour)
	h2 := mix(h)
	pr.counts = [numPatientTypes]int{
		tPatient:              1,
		tEncounter:            pr.nEnc,
		tObservation:          pr.nEnc * 6,
		tCondition:            int(h2 % 6),
		tMedicationRequest:    int(h2 >> 8 % 7),
		tProcedure:            int(h2 >> 16 % 6),
		tImmunization:         1 + int(h2>>24%4),
		tAllergyIntolerance:   int(h2 >> 32 % 3),
		tDiagnosticReport:     pr.nEnc,
		tDocumentReference:    1 + pr.nEnc/3,
		tClaim:                pr.nEnc,
		tExplanationOfBenefit: pr.nEnc,
		tCoverage:             1,
	}
	return pr
}

// baseLastUpdated is meta.lastUpdated of version 1 of a resource: the
// patient's creation time, or for initial data a deterministic instant in
// the year before Start (millisecond precision).
func (g *generator) baseLastUpdated(pr *profile, typ int, p uint32, ord int) time.Time {
	if pr != nil && !pr.created.IsZero() {
		return pr.created
	}
	const year = int64(365 * 24 * time.Hour / time.Millisecond)
	ms := 1 + int64(hash4(g.seed, uint64(typ)|0x100, uint64(p), uint64(ord))%uint64(year))
	return g.start.Add(-time.Duration(ms) * time.Millisecond)
}

// encounterStart is when encounter e of a patient began; encounters are
// spread over the years before Start, oldest first.
func (g *generator) encounterStart(pr *profile, e int) time.Time {
	h := hash4(g.seed, 0xe1c, uint64(pr.p), uint64(e))
	back := time.Duration(pr.nEnc-e) * 97 * 24 * time.Hour
	t := g.start.Add(-back - time.Duration(h%(60*24))*time.Minute)
	if t.Before(pr.birth) {
		t = pr.birth.Add(time.Duration(e+1) * 24 * time.Hour)
	}
	return t.Truncate(time.Second)
}

// attrs are the searchable fields of a resource, used by _typeFilter. The
// renderer uses the same values.
type attrs struct {
	code           *code
	status         string
	category       string
	clinicalStatus string
}

// attrsOf computes a resource's searchable fields without rendering it.
func (g *generator) attrsOf(pr *profile, typ, ord int, ver uint32) attrs {
	h := hash4(g.seed, uint64(typ)|0x200, uint64(pr.p), uint64(ord))
	switch typ {
	case tObservation:
		kind := ord % 6
		a := attrs{status: "final", category: "vital-signs"}
		if ver > 1 {
			a.status = "amended"
		}
		if kind == 5 {
			a.category = "laboratory"
		}
		return a
	case tCondition:
		a := attrs{code: &conditions[h%uint64(len(conditions))], status: "", clinicalStatus: "active"}
		if h>>20%3 == 0 || ver > 1 && ver%2 == 0 {
			a.clinicalStatus = "resolved"
		}
		return a
	case tMedicationRequest:
		a := attrs{code: &meds[h%uint64(len(meds))], status: "completed"}
		if h>>20%4 == 0 {
			a.status = "active"
		}
		if ver > 1 {
			a.status = "stopped"
		}
		return a
	case tProcedure:
		return attrs{code: &procedures[h%uint64(len(procedures))], status: "completed"}
	case tImmunization:
		return attrs{code: &vaccines[h%uint64(len(vaccines))], status: "completed"}
	case tAllergyIntolerance:
		return attrs{code: &allergies[h%uint64(len(allergies))], clinicalStatus: "active"}
	case tEncounter:
		return attrs{code: &encounterTypes[h%uint64(len(encounterTypes))], status: "finished"}
	case tDiagnosticReport:
		return attrs{code: &labPanels[h%uint64(len(labPanels))], status: "final", category: "LAB"}
	case tDocumentReference:
		return attrs{status: "current"}
	case tClaim, tExplanationOfBenefit, tCoverage:
		return attrs{status: "active"}
	}
	return attrs{}
}

// obsCode returns the LOINC entry of observation ord of a patient.
func (g *generator) obsCode(pr *profile, ord int) *labKind {
	kind := ord % 6
	if kind < 5 {
		return &vitals[kind]
	}
	return &labs[hash4(g.seed, 0x1ab, uint64(pr.p), uint64(ord))%uint64(len(labs))]
}

// value draws a deterministic value in [lo, hi], rounded to decimals.
func value(h uint64, lo, hi float64, decimals int) float64 {
	v := lo + (hi-lo)*float64(h%100000)/100000
	p := math.Pow(10, float64(decimals))
	return math.Round(v*p) / p
}

// w is an append-only JSON writer for trusted, mostly-literal output; it
// is the hot path, so it avoids reflection and maps entirely.
type w struct{ b []byte }

func (x *w) raw(s string) { x.b = append(x.b, s...) }

// str appends s as a JSON string.
func (x *w) str(s string) {
	x.b = append(x.b, '"')
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' || c < 0x20 {
			clean = false
			break
		}
	}
	if clean {
		x.b = append(x.b, s...)
		x.b = append(x.b, '"')
		return
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			x.b = append(x.b, '\\', c)
		case c < 0x20:
			x.b = append(x.b, `\u00`...)
			x.b = append(x.b, "0123456789abcdef"[c>>4], "0123456789abcdef"[c&0xf])
		default:
			x.b = append(x.b, c)
		}
	}
	x.b = append(x.b, '"')
}

func (x *w) int(v int)       { x.b = strconv.AppendInt(x.b, int64(v), 10) }
func (x *w) float(v float64) { x.b = strconv.AppendFloat(x.b, v, 'f', -1, 64) }
func (x *w) ref(g *generator, typ int, p uint32, ord int) {
	x.raw(`{"reference":"`)
	x.raw(typeNames[typ])
	x.b = append(x.b, '/')
	x.b = g.appendID(x.b, typ, p, ord)
	x.raw(`"}`)
}

var est = time.FixedZone("", -5*3600)

// dateTime appends a clinical dateTime with a -05:00 offset, like Synthea.
func (x *w) dateTime(t time.Time) {
	x.b = append(x.b, '"')
	x.b = t.In(est).AppendFormat(x.b, "2006-01-02T15:04:05-07:00")
	x.b = append(x.b, '"')
}

func (x *w) date(t time.Time) {
	x.b = append(x.b, '"')
	x.b = t.AppendFormat(x.b, "2006-01-02")
	x.b = append(x.b, '"')
}

// instant appends a UTC instant with milliseconds, as meta.lastUpdated.
func (x *w) instant(t time.Time) {
	x.b = append(x.b, '"')
	x.b = appendInstant(x.b, t)
	x.b = append(x.b, '"')
}

func appendInstant(b []byte, t time.Time) []byte {
	return t.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
}

func (x *w) coding(c *code) {
	x.raw(`{"coding":[{"system":"`)
	x.raw(c.system)
	x.raw(`","code":"`)
	x.raw(c.code)
	x.raw(`","display":`)
	x.str(c.display)
	x.raw(`}],"text":`)
	x.str(c.display)
	x.b = append(x.b, '}')
}
