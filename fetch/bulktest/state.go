package bulktest

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// ovEntry is a resource's state after a mutation; resources without one
// are at version 1 with their base lastUpdated.
type ovEntry struct {
	ver     uint32
	at      time.Time // lastUpdated, or the deletion time for a tombstone
	deleted bool
}

// state is an immutable snapshot of the server's data. Advance builds a
// new one (copy-on-write; the overlay is small), and a job keeps the one it
// started with, so exports in flight never change.
type state struct {
	epoch    int
	now      time.Time
	initial  int
	patients int
	created  []time.Time // creation time of patient initial+i
	overlay  map[uint64]ovEntry
	added    map[uint32]time.Time // patients added to the cohort Group
	removed  map[uint32]time.Time // patients taken out of it (wins over added)
	groupVer [2]uint32            // versions of Groups "all" and "cohort"
	groupAt  [2]time.Time
}

func initialState(g *generator, patients int, start time.Time) *state {
	g.setPools(patients)
	t := start.Add(-24 * time.Hour)
	return &state{
		now: start, initial: patients, patients: patients,
		overlay: map[uint64]ovEntry{}, added: map[uint32]time.Time{}, removed: map[uint32]time.Time{},
		groupVer: [2]uint32{1, 1}, groupAt: [2]time.Time{t, t},
	}
}

func (st *state) clone() *state {
	n := *st
	n.created = slices.Clone(st.created)
	n.overlay = maps.Clone(st.overlay)
	n.added = maps.Clone(st.added)
	n.removed = maps.Clone(st.removed)
	return &n
}

func (st *state) createdAt(p uint32) time.Time {
	if int(p) < st.initial {
		return time.Time{}
	}
	return st.created[int(p)-st.initial]
}

func (st *state) profile(g *generator, p uint32) profile {
	return g.profile(p, st.createdAt(p))
}

// inGroup reports whether patient p belongs to group id.
func (st *state) inGroup(g *generator, id string, p uint32) bool {
	if int(p) >= st.patients {
		return false
	}
	if id == groupAll {
		return true
	}
	if _, ok := st.removed[p]; ok {
		return false
	}
	if int(p) >= st.initial {
		return true // patients created by Advance join the cohort
	}
	if _, ok := st.added[p]; ok {
		return true
	}
	return hash4(g.seed, 0xc0, uint64(p), 0)%100 < g.cohortPc
}

// version returns the state of one resource in this snapshot.
func (st *state) version(g *generator, pr *profile, typ int, p uint32, ord int) (ver uint32, lu time.Time, deleted bool) {
	if len(st.overlay) > 0 {
		if e, ok := st.overlay[ovKey(typ, p, ord)]; ok {
			return e.ver, e.at, e.deleted
		}
	}
	return 1, g.baseLastUpdated(pr, typ, p, ord), false
}

// scope is the set of patients an export covers.
type scope struct {
	level    string // levelSystem, levelPatient or levelGroup
	group    string
	patients []uint32 // explicit `patient` list, sorted; nil for all
}

const (
	levelSystem  = "system"
	levelPatient = "patient"
	levelGroup   = "group"
)

// eachPatient calls fn for the patients in scope from index from on, in
// ascending order, until fn returns false.
func (sc *scope) eachPatient(g *generator, st *state, from uint32, fn func(p uint32) bool) {
	if sc.patients != nil {
		i, _ := slices.BinarySearch(sc.patients, from)
		for ; i < len(sc.patients); i++ {
			if !fn(sc.patients[i]) {
				return
			}
		}
		return
	}
	for p := from; int(p) < st.patients; p++ {
		if sc.level == levelGroup && !st.inGroup(g, sc.group, p) {
			continue
		}
		if !fn(p) {
			return
		}
	}
}

func (sc *scope) contains(g *generator, st *state, p uint32) bool {
	if sc.patients != nil {
		_, ok := slices.BinarySearch(sc.patients, p)
		return ok
	}
	if sc.level == levelGroup {
		return st.inGroup(g, sc.group, p)
	}
	return int(p) < st.patients
}

// defaultTypes are the types an export of a level returns without _type.
func defaultTypes(level string) []int {
	n := tLocation + 1
	if level == levelSystem {
		n = numTypes
	}
	t := make([]int, n)
	for i := range t {
		t[i] = i
	}
	return t
}

// cursor is a position in the canonical order of one type.
type cursor struct {
	p   uint32
	ord int
}

// scan visits every live resource of typ in scope from cur on, in
// canonical order (patient, then ordinal), until fn returns false. r is
// reused between calls.
func (g *generator) scan(st *state, sc *scope, typ int, cur cursor, base string, fn func(r *res, at cursor) bool) {
	r := &res{typ: typ, base: base}
	if typ >= numPatientTypes {
		if typ == tGroup {
			return // Groups are rendered separately
		}
		for ord := cur.ord; ord < g.poolSize(typ); ord++ {
			ver, lu, del := st.version(g, nil, typ, 0, ord)
			if del {
				continue
			}
			r.p, r.ord, r.ver, r.lu, r.pr = 0, ord, ver, lu, nil
			if !fn(r, cursor{0, ord}) {
				return
			}
		}
		return
	}
	var pr profile
	sc.eachPatient(g, st, cur.p, func(p uint32) bool {
		pr = st.profile(g, p)
		start := 0
		if p == cur.p {
			start = cur.ord
		}
		for ord := start; ord < pr.counts[typ]; ord++ {
			ver, lu, del := st.version(g, &pr, typ, p, ord)
			if del {
				continue
			}
			r.p, r.ord, r.ver, r.lu, r.pr = p, ord, ver, lu, &pr
			if !fn(r, cursor{p, ord}) {
				return false
			}
		}
		return true
	})
}

// renderGroup appends Group resource which (0 "all", 1 "cohort").
func (g *generator) renderGroup(b []byte, st *state, which int) []byte {
	id := groupAll
	if which == 1 {
		id = groupCohort
	}
	x := w{b: b}
	x.raw(`{"resourceType":"Group","id":"`)
	x.raw(id)
	x.raw(`","meta":{"versionId":"`)
	x.int(int(st.groupVer[which]))
	x.raw(`","lastUpdated":`)
	x.instant(st.groupAt[which])
	x.raw(`},"identifier":[{"system":"urn:fhirferry:bulktest:group","value":"`)
	x.raw(id)
	x.raw(`"}],"active":true,"type":"person","actual":true,"name":"`)
	if which == 0 {
		x.raw(`All patients"`)
	} else {
		x.raw(`Cohort"`)
	}
	n := 0
	sc := scope{level: levelGroup, group: id}
	x.raw(`,"member":[`)
	sc.eachPatient(g, st, 0, func(p uint32) bool {
		if n > 0 {
			x.b = append(x.b, ',')
		}
		n++
		x.raw(`{"entity":`)
		x.ref(g, tPatient, p, 0)
		x.b = append(x.b, '}')
		return true
	})
	x.raw(`],"quantity":`)
	x.int(n)
	x.b = append(x.b, '}')
	return x.b
}

func groupIndex(id string) (int, bool) {
	switch id {
	case groupAll:
		return 0, true
	case groupCohort:
		return 1, true
	}
	return 0, false
}

// parseLevel accepts "system", "patient", "group" in any case.
func parseLevel(level string) (string, error) {
	switch strings.ToLower(level) {
	case levelSystem, "":
		return levelSystem, nil
	case levelPatient:
		return levelPatient, nil
	case levelGroup:
		return levelGroup, nil
	}
	return "", fmt.Errorf("bulktest: level %q: want system, patient or group", level)
}

// Truth returns what a full export (no _since, no filters) at that level
// would return now: every live resource of types (nil: the level's
// default types), keyed by type and id. level is "system", "patient" or
// "group"; groupID is used for "group". It materialises everything, so
// use it on small data.
func (s *Server) Truth(level, groupID string, types []string) map[Key]TruthRow {
	lv, err := parseLevel(level)
	if err != nil {
		panic(err)
	}
	st := s.st.Load()
	g := s.gen
	sc := &scope{level: lv, group: groupID}
	ts := defaultTypes(lv)
	if types != nil {
		ts = ts[:0]
		for _, t := range types {
			if i, ok := typeIndex[t]; ok {
				ts = append(ts, i)
			}
		}
	}
	base := s.BaseURL()
	out := map[Key]TruthRow{}
	for _, typ := range ts {
		if typ == tGroup {
			for i, id := range []string{groupAll, groupCohort} {
				out[Key{"Group", id}] = TruthRow{LastUpdated: st.groupAt[i], VersionID: fmt.Sprint(st.groupVer[i]), JSON: g.renderGroup(nil, st, i)}
			}
			continue
		}
		g.scan(st, sc, typ, cursor{}, base, func(r *res, _ cursor) bool {
			out[Key{typeNames[typ], g.id(typ, r.p, r.ord)}] = TruthRow{
				LastUpdated: r.lu, VersionID: fmt.Sprint(r.ver),
				JSON: g.render(nil, r, renderOpts{}),
			}
			return true
		})
	}
	return out
}

// Advance moves the clock forward by d (at least 1ms, so every mutation
// is strictly after the previous transactionTime) and applies m at the
// new time. Choices are deterministic given the seed and the sequence of
// Advance calls.
func (s *Server) Advance(d time.Duration, m Mutation) MutationResult {
	s.advMu.Lock()
	defer s.advMu.Unlock()
	g := s.gen
	st := s.st.Load().clone()
	st.epoch++
	if d < time.Millisecond {
		d = time.Millisecond
	}
	st.now = st.now.Add(d).Truncate(time.Millisecond)
	a := &advance{g: g, st: st, now: st.now, rng: mix(g.seed ^ uint64(st.epoch)*0x51ed27), touched: map[uint64]bool{}}
	a.res.Time = st.now
	a.newPatients(m.NewPatients)
	for range m.UpdatedResources {
		k, ok := a.pick(true)
		if !ok {
			break
		}
		st.overlay[k] = ovEntry{ver: a.curVer(k) + 1, at: a.now}
		a.res.Updated = append(a.res.Updated, a.key(k))
	}
	// Tombstones that exist before this Advance's deletes can be recreated.
	var tombs []uint64
	for k, e := range st.overlay {
		if e.deleted && !a.touched[k] {
			tombs = append(tombs, k)
		}
	}
	slices.Sort(tombs)
	for range m.DeletedResources {
		k, ok := a.pick(false)
		if !ok {
			break
		}
		st.overlay[k] = ovEntry{ver: a.curVer(k) + 1, at: a.now, deleted: true}
		a.res.Deleted = append(a.res.Deleted, a.key(k))
	}
	for i := 0; i < m.RecreatedResources && len(tombs) > 0; i++ {
		j := a.next(len(tombs))
		k := tombs[j]
		tombs = slices.Delete(tombs, j, j+1)
		st.overlay[k] = ovEntry{ver: a.curVer(k) + 1, at: a.now}
		a.res.Recreated = append(a.res.Recreated, a.key(k))
	}
	// Removals first, so that this Advance's newcomers stay.
	removed := a.removeGroupMembers(m.RemoveGroupMembers)
	added := a.addGroupMembers(m.AddGroupMembers)
	if added+removed > 0 && m.NewPatients == 0 {
		st.groupVer[1]++
		st.groupAt[1] = a.now
	}
	s.st.Store(st)
	return a.res
}

// AdvanceEvery calls Advance(every, m) every interval until ctx ends,
// logging each step.
func (s *Server) AdvanceEvery(ctx context.Context, every time.Duration, m Mutation) {
	tk := time.NewTicker(every)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
			r := s.Advance(every, m)
			s.log.Info("server clock advanced", "now", r.Time, "created", len(r.Created),
				"updated", len(r.Updated), "deleted", len(r.Deleted))
		}
	}
}

// advance is one Advance in progress on a clone of the state.
type advance struct {
	g       *generator
	st      *state
	now     time.Time
	rng     uint64
	touched map[uint64]bool // resources this Advance already changed
	res     MutationResult
}

// next draws a number in [0, n).
func (a *advance) next(n int) int {
	a.rng = mix(a.rng + 0x9e3779b97f4a7c15)
	return int(a.rng % uint64(n))
}

func (a *advance) key(k uint64) Key {
	typ, p, ord := splitKey(k)
	return Key{typeNames[typ], a.g.id(typ, p, ord)}
}

func (a *advance) curVer(k uint64) uint32 {
	if e, ok := a.st.overlay[k]; ok {
		return e.ver
	}
	return 1
}

// newPatients creates n patients with every resource of their profile; a
// new patient joins every Group, whose version moves.
func (a *advance) newPatients(n int) {
	st, g := a.st, a.g
	for range n {
		p := uint32(st.patients)
		st.created = append(st.created, a.now)
		st.patients++
		a.res.NewPatients = append(a.res.NewPatients, Key{"Patient", g.id(tPatient, p, 0)})
		pr := st.profile(g, p)
		for typ := 0; typ < numPatientTypes; typ++ {
			for ord := 0; ord < pr.counts[typ]; ord++ {
				a.res.Created = append(a.res.Created, Key{typeNames[typ], g.id(typ, p, ord)})
				a.touched[ovKey(typ, p, ord)] = true
			}
		}
	}
	if n > 0 {
		for i := range st.groupVer {
			st.groupVer[i]++
			st.groupAt[i] = a.now
		}
	}
}

// pick finds a random live resource not touched in this Advance.
func (a *advance) pick(allowPatient bool) (uint64, bool) {
	st, g := a.st, a.g
	for range 200 {
		typ := a.next(tLocation + 1)
		if typ == tPatient && !allowPatient {
			continue
		}
		var p uint32
		var n int
		if typ < numPatientTypes {
			if st.patients == 0 {
				continue
			}
			p = uint32(a.next(st.patients))
			n = st.profile(g, p).counts[typ]
		} else {
			n = g.poolSize(typ)
		}
		if n == 0 {
			continue
		}
		k := ovKey(typ, p, a.next(n))
		if a.touched[k] {
			continue
		}
		if e, ok := st.overlay[k]; ok && e.deleted {
			continue
		}
		a.touched[k] = true
		return k, true
	}
	return 0, false
}

// addGroupMembers adds up to n patients who are not members (never were,
// or were removed) to the cohort Group, and returns how many it added.
// Patients this Advance removed are not candidates.
func (a *advance) addGroupMembers(n int) int {
	st := a.st
	return a.pickPatients(n, func(p uint32) bool {
		if st.inGroup(a.g, groupCohort, p) || st.removed[p].Equal(a.now) {
			return false
		}
		delete(st.removed, p)
		st.added[p] = a.now
		a.res.AddedToGroup = append(a.res.AddedToGroup, Key{"Patient", a.g.id(tPatient, p, 0)})
		return true
	})
}

// removeGroupMembers takes up to n members out of the cohort Group (not
// the patients this Advance created), and returns how many it removed.
func (a *advance) removeGroupMembers(n int) int {
	st := a.st
	return a.pickPatients(n, func(p uint32) bool {
		// Patients this Advance created joined with it: they stay.
		if !st.inGroup(a.g, groupCohort, p) || st.createdAt(p).Equal(a.now) {
			return false
		}
		delete(st.added, p)
		st.removed[p] = a.now
		a.res.RemovedFromGroup = append(a.res.RemovedFromGroup, Key{"Patient", a.g.id(tPatient, p, 0)})
		return true
	})
}

// pickPatients draws random patients until take has accepted n of them
// (or 50 draws per wanted patient found too few), and returns how many it
// accepted.
func (a *advance) pickPatients(n int, take func(p uint32) bool) int {
	taken := 0
	for range n * 50 {
		if taken == n || a.st.patients == 0 {
			break
		}
		if take(uint32(a.next(a.st.patients))) {
			taken++
		}
	}
	return taken
}

// Members returns the ids of the Patients in Group id now, sorted; nil
// for an unknown Group.
func (s *Server) Members(id string) []string {
	if _, ok := groupIndex(id); !ok {
		return nil
	}
	g, st := s.gen, s.st.Load()
	var out []string
	sc := scope{level: levelGroup, group: id}
	sc.eachPatient(g, st, 0, func(p uint32) bool {
		out = append(out, g.id(tPatient, p, 0))
		return true
	})
	slices.Sort(out)
	return out
}
