package bulktest

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/valyala/fastjson"
)

// newGzipPool recycles the gzip writers of file downloads.
func newGzipPool() *sync.Pool {
	return &sync.Pool{New: func() any {
		zw, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed)
		return zw
	}}
}

// sign is the capability a redirected (signed) file URL carries instead
// of a bearer token.
func (s *Server) sign(path string) string {
	var h uint64 = 0xcbf29ce484222325
	for i := 0; i < len(path); i++ {
		h = (h ^ uint64(path[i])) * 0x100000001b3
	}
	return strconv.FormatUint(mix(h^s.gen.seed), 36)
}

// fileInjections are the faults applied while streaming one file.
type fileInjections struct {
	truncate  bool
	wrongType int
	malformed int
	longDiv   int
}

func (s *Server) handleFile(w http.ResponseWriter, r *http.Request, rec *RequestRecord, jobID, genStr, name, origin string) {
	if !s.fileGate(w, r, rec, origin) {
		return
	}
	gen, _ := strconv.Atoi(genStr)
	n, _, _ := strings.Cut(name, ".")
	idx, err := strconv.Atoi(n)

	s.mu.Lock()
	s.stats.Downloads[r.URL.Path]++
	j, ok := s.jobs[jobID]
	if !ok || j.deleted || err != nil || idx < 1 || idx > len(j.files) || j.files[idx-1].name != name || gen > j.gen {
		s.mu.Unlock()
		rec.Status = http.StatusNotFound
		writeOO(w, rec.Status, "error", "not-found", "the exported resources have been deleted or never existed")
		return
	}
	f := &j.files[idx-1]
	status, inj := s.fileFaultsLocked(w, rec, j, f, gen)
	slow := s.faults.SlowFirstByte
	if slow > 0 {
		s.faultLocked(rec, "SlowFirstByte")
	}
	s.mu.Unlock()

	if slow > 0 {
		t := time.NewTimer(slow)
		select {
		case <-r.Context().Done():
			t.Stop()
			rec.Status = 499
			return
		case <-t.C:
		}
	}
	if status != 0 {
		rec.Status = status
		writeOO(w, status, "error", map[int]string{http.StatusGone: "not-found", http.StatusInternalServerError: "exception",
			http.StatusTooManyRequests: "throttled"}[status], fileErrorText[status])
		return
	}
	s.serveFile(w, r, rec, j, f, name, inj)
}

// fileErrorText is the diagnostics of each injected file error status.
var fileErrorText = map[int]string{
	http.StatusGone:                "the file expired; get a fresh manifest from the status URL",
	http.StatusInternalServerError: "internal error while reading the file",
	http.StatusTooManyRequests:     "too many requests",
}

// fileGate applies the file URL's access rules: a redirected file needs
// its signature, a file origin under auth needs the token, and the main
// origin redirects to the files origin when asked. It counts who sent a
// token, and reports whether the request may go on.
func (s *Server) fileGate(w http.ResponseWriter, r *http.Request, rec *RequestRecord, origin string) bool {
	signed := origin == "files" && s.opts.RedirectFiles && r.URL.Query().Get("sig") == s.sign(r.URL.Path)
	if origin == "files" && s.opts.RedirectFiles && !signed {
		rec.Status = http.StatusForbidden
		writeOO(w, rec.Status, "error", "forbidden", "the signature of this URL is missing or wrong")
		return false
	}
	s.mu.Lock()
	if rec.HadAuth {
		s.stats.AuthHeadersSeenOnFiles++
		if origin == "files" {
			s.stats.AuthHeadersSeenOnFilesOrigin++
		}
	} else {
		s.stats.TokenlessFileRequests++
	}
	s.mu.Unlock()
	if !signed && s.filesAuth && !s.authorize(w, r, rec) {
		return false
	}
	if origin == "main" && s.opts.RedirectFiles && s.filesOrigin != "" {
		s.mu.Lock()
		s.faultLocked(rec, "Redirect")
		s.mu.Unlock()
		rec.Status = http.StatusTemporaryRedirect
		w.Header().Set("Location", s.filesOrigin+r.URL.Path+"?sig="+s.sign(r.URL.Path))
		w.WriteHeader(rec.Status)
		return false
	}
	return true
}

// fileFaultsLocked picks the faults of this download: an error status
// (0: none) or the injections into the file's lines. s.mu is held.
func (s *Server) fileFaultsLocked(w http.ResponseWriter, rec *RequestRecord, j *job, f *fileEntry, gen int) (int, fileInjections) {
	var inj fileInjections
	fault, status := "", 0
	switch {
	case gen <= j.expired:
		status = http.StatusGone
	case s.faults.ExpiredDownloads > 0:
		s.faults.ExpiredDownloads--
		fault, status = "ExpiredDownloads", http.StatusGone
		j.expired = j.gen
	case s.faults.File5xx > 0:
		s.faults.File5xx--
		fault, status = "File5xx", http.StatusInternalServerError
	case s.faults.File429 > 0:
		s.faults.File429--
		fault, status = "File429", http.StatusTooManyRequests
		w.Header().Set("Retry-After", s.retryAfterLocked())
	case s.faults.TruncateDownloads > 0:
		s.faults.TruncateDownloads--
		fault, inj.truncate = "TruncateDownloads", true
	}
	if fault != "" {
		s.faultLocked(rec, fault)
	}
	if status != 0 || f.kind != fileOutput {
		return status, inj
	}
	if s.faults.WrongTypeLines > 0 {
		inj.wrongType, s.faults.WrongTypeLines = s.faults.WrongTypeLines, 0
		s.faultLocked(rec, "WrongTypeLines")
	}
	if s.faults.MalformedLines > 0 {
		inj.malformed, s.faults.MalformedLines = s.faults.MalformedLines, 0
		s.faultLocked(rec, "MalformedLines")
	}
	if s.faults.VeryLongLine > 0 {
		inj.longDiv, s.faults.VeryLongLine = s.faults.VeryLongLine, 0
		s.faultLocked(rec, "VeryLongLine")
	}
	return status, inj
}

// serveFile streams the file, gzip-compressed when the client accepts it;
// a truncation fault cuts the connection mid-file.
func (s *Server) serveFile(w http.ResponseWriter, r *http.Request, rec *RequestRecord, j *job, f *fileEntry, name string, inj fileInjections) {
	rec.Status = http.StatusOK
	w.Header().Set("Content-Type", "application/fhir+ndjson")
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	var out io.Writer = w
	var zw *gzip.Writer
	if acceptsGzip(r.Header.Get("Accept-Encoding")) {
		w.Header().Set("Content-Encoding", "gzip")
		zw = s.gzip.Get().(*gzip.Writer)
		zw.Reset(w)
		out = zw
	}
	w.WriteHeader(http.StatusOK)
	written := s.streamFile(out, r, j, f, inj)
	s.mu.Lock()
	s.stats.FileBytes += written
	s.mu.Unlock()
	if inj.truncate {
		if zw != nil {
			_ = zw.Flush()
		}
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
		panic(http.ErrAbortHandler) // cut the connection mid-file
	}
	if zw != nil {
		_ = zw.Close()
		zw.Reset(io.Discard)
		s.gzip.Put(zw)
	}
}

func acceptsGzip(ae string) bool {
	for _, part := range strings.Split(ae, ",") {
		enc, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(enc), "gzip") && strings.TrimSpace(q) != "q=0" {
			return true
		}
	}
	return false
}

// streamFile writes the NDJSON of f and returns the bytes written (before
// compression). It stops early on a write error (the client went away).
func (s *Server) streamFile(out io.Writer, r *http.Request, j *job, f *fileEntry, inj fileInjections) int64 {
	g := s.gen
	var total int64
	buf := make([]byte, 0, 96<<10)
	var werr error
	flush := func() {
		if werr == nil && len(buf) > 0 {
			_, werr = out.Write(buf)
			total += int64(len(buf))
		}
		buf = buf[:0]
	}
	limit := f.count
	if inj.truncate {
		limit = (f.count + 1) / 2
	}
	switch f.kind {
	case fileError:
		buf = ooJSON(buf, "error", "processing", f.errMsg)
		buf = append(buf, '\n')
	case fileDeleted:
		for i := 0; i < len(f.deleted) && i/bundleSize < limit; i += bundleSize {
			buf = s.appendDeleteBundle(buf, j, f.deleted[i:min(i+bundleSize, len(f.deleted))])
			if len(buf) >= 64<<10 {
				flush()
			}
		}
	case fileOutput:
		base := s.BaseURL()
		if base == "" {
			base = s.base(r)
		}
		var sub subsetter
		elems, subsetted := j.req.elementsFor(f.typ)
		lines := 0
		emit := func(rr *res) bool {
			ro := renderOpts{subsetted: subsetted}
			if lines == 0 {
				ro.longDiv = inj.longDiv
			}
			if subsetted {
				buf = sub.filter(buf, g.render(sub.tmp[:0], rr, ro), elems)
			} else {
				buf = g.render(buf, rr, ro)
			}
			buf = append(buf, '\n')
			lines++
			if lines == 1 {
				buf = s.appendInjected(buf, f.typ, inj)
			}
			if len(buf) >= 64<<10 {
				flush()
			}
			return werr == nil && lines < limit && r.Context().Err() == nil
		}
		if f.typ == tGroup {
			for i := f.start.ord; i < 2 && lines < limit; i++ {
				rr := &res{typ: tGroup, ord: i, lu: j.st.groupAt[i], ver: j.st.groupVer[i]}
				if j.req.match(g, rr, j.tx) {
					buf = g.renderGroup(buf, j.st, i)
					buf = append(buf, '\n')
					lines++
				}
			}
			break
		}
		if limit > 0 {
			g.scan(j.st, &j.req.scope, f.typ, f.start, base, func(rr *res, _ cursor) bool {
				if !j.req.match(g, rr, j.tx) {
					return true
				}
				return emit(rr)
			})
		}
	}
	if inj.truncate {
		buf = append(buf, `{"resourceType":"`...) // half a line
	}
	flush()
	return total
}

// appendInjected adds the WrongTypeLines and MalformedLines faults.
func (s *Server) appendInjected(b []byte, typ int, inj fileInjections) []byte {
	other := tPractitioner
	if typ == tPractitioner {
		other = tOrganization
	}
	for i := range inj.wrongType {
		b = s.gen.render(b, &res{typ: other, ord: i % s.gen.poolSize(other), ver: 1, lu: s.opts.Start.Add(-time.Hour)}, renderOpts{})
		b = append(b, '\n')
	}
	for range inj.malformed {
		b = append(b, `{"resourceType":"`+typeNames[typ]+`","id": this is not JSON`+"\n"...)
	}
	return b
}

// appendDeleteBundle appends one transaction Bundle line of DELETE entries.
func (s *Server) appendDeleteBundle(b []byte, j *job, keys []uint64) []byte {
	x := w{b: b}
	x.raw(`{"resourceType":"Bundle","type":"transaction","entry":[`)
	for i, k := range keys {
		typ, p, ord := splitKey(k)
		if i > 0 {
			x.b = append(x.b, ',')
		}
		x.raw(`{"request":{"method":"DELETE","url":"`)
		x.raw(typeNames[typ])
		x.b = append(x.b, '/')
		x.b = s.gen.appendID(x.b, typ, p, ord)
		x.raw(`"}}`)
	}
	x.raw("]}\n")
	return x.b
}

// elementsFor returns the _elements that apply to typ; ok is false when
// the export is not subsetted for typ.
func (req *exportReq) elementsFor(typ int) ([]string, bool) {
	if req.elements == nil {
		return nil, false
	}
	e := append(append([]string(nil), req.elements[-1]...), req.elements[typ]...)
	if len(e) == 0 {
		// _elements named only other types: this type comes back whole.
		return nil, false
	}
	return e, true
}

// mandatory elements are returned whatever _elements says.
var mandatory = map[string]bool{"resourceType": true, "id": true, "meta": true}

// subsetter keeps only some top-level elements of rendered resources.
type subsetter struct {
	p   fastjson.Parser
	tmp []byte
}

func (s *subsetter) filter(dst, src []byte, keep []string) []byte {
	s.tmp = src
	v, err := s.p.ParseBytes(src)
	if err != nil {
		return append(dst, src...) // cannot happen for generated JSON
	}
	obj, _ := v.Object()
	dst = append(dst, '{')
	first := true
	obj.Visit(func(k []byte, v *fastjson.Value) {
		ks := string(k)
		if !mandatory[ks] && !contains(keep, ks) {
			return
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, '"')
		dst = append(dst, k...)
		dst = append(dst, '"', ':')
		dst = v.MarshalTo(dst)
	})
	return append(dst, '}')
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (s *Server) handleAttachment(w http.ResponseWriter, r *http.Request, rec *RequestRecord, name, origin string) {
	s.mu.Lock()
	if rec.HadAuth {
		s.stats.AuthHeadersSeenOnFiles++
		if origin == "files" {
			s.stats.AuthHeadersSeenOnFilesOrigin++
		}
	} else {
		s.stats.TokenlessFileRequests++
	}
	s.mu.Unlock()
	if s.filesAuth && !s.authorize(w, r, rec) {
		return
	}
	id := strings.TrimSuffix(name, ".txt")
	typ, p, ord, ok := s.gen.parseID(id)
	st := s.st.Load()
	if !ok || typ != tDocumentReference || int(p) >= st.patients {
		rec.Status = http.StatusNotFound
		writeOO(w, rec.Status, "error", "not-found", "no such attachment")
		return
	}
	body := s.gen.attachment(p, ord)
	rec.Status = http.StatusOK
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}
