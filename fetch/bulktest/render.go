package bulktest

import (
	"strconv"
	"time"
)

// res identifies one resource version to render.
type res struct {
	typ  int
	p    uint32 // patient index (0 for shared types)
	ord  int    // ordinal within the patient (or pool index)
	ver  uint32
	lu   time.Time
	pr   *profile // nil for shared types
	base string   // FHIR base URL, for attachment URLs
}

// renderOpts changes how a resource is rendered for a particular export.
type renderOpts struct {
	subsetted bool // add meta.tag SUBSETTED (for _elements)
	longDiv   int  // add text.div of this many bytes (VeryLongLine fault)
}

// render appends the resource's JSON (no newline) to b.
func (g *generator) render(b []byte, r *res, o renderOpts) []byte {
	x := w{b: b}
	x.raw(`{"resourceType":"`)
	x.raw(typeNames[r.typ])
	x.raw(`","id":"`)
	x.b = g.appendID(x.b, r.typ, r.p, r.ord)
	x.raw(`","meta":{"versionId":"`)
	x.b = strconv.AppendUint(x.b, uint64(r.ver), 10)
	x.raw(`","lastUpdated":`)
	x.instant(r.lu)
	if o.subsetted {
		x.raw(`,"tag":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ObservationValue","code":"SUBSETTED","display":"subsetted"}]`)
	}
	x.b = append(x.b, '}')
	if o.longDiv > 0 {
		x.raw(`,"text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">`)
		for i := 0; i < o.longDiv; i++ {
			x.b = append(x.b, "Lorem ipsum dolor sit amet "[i%27])
		}
		x.raw(`</div>"}`)
	}
	switch r.typ {
	case tPatient:
		g.renderPatient(&x, r)
	case tEncounter:
		g.renderEncounter(&x, r)
	case tObservation:
		g.renderObservation(&x, r)
	case tCondition, tAllergyIntolerance:
		g.renderCondition(&x, r)
	case tMedicationRequest:
		g.renderMedReq(&x, r)
	case tProcedure, tImmunization:
		g.renderProcImm(&x, r)
	case tDiagnosticReport:
		g.renderDiagReport(&x, r)
	case tDocumentReference:
		g.renderDocRef(&x, r)
	case tClaim, tExplanationOfBenefit:
		g.renderClaim(&x, r)
	case tCoverage:
		g.renderCoverage(&x, r)
	case tPractitioner:
		g.renderPractitioner(&x, r)
	case tOrganization, tLocation:
		g.renderOrgLoc(&x, r)
	}
	x.b = append(x.b, '}')
	return x.b
}

func (g *generator) h(r *res, salt uint64) uint64 {
	return hash4(g.seed, uint64(r.typ)|salt<<8, uint64(r.p), uint64(r.ord))
}

// hv varies with the version, for fields an update changes.
func (g *generator) hv(r *res, salt uint64) uint64 {
	return mix(g.h(r, salt) ^ uint64(r.ver)*0x9e3779b97f4a7c15)
}

func (g *generator) name(pr *profile) (given, family string) {
	if pr.female {
		given = givenFemale[pr.h>>20%uint64(len(givenFemale))]
	} else {
		given = givenMale[pr.h>>20%uint64(len(givenMale))]
	}
	return given, families[pr.h>>28%uint64(len(families))]
}

func (g *generator) renderPatient(x *w, r *res) {
	pr := r.pr
	given, family := g.name(pr)
	race := &races[pr.h>>36%uint64(len(races))]
	eth := &ethnicities[pr.h>>40%uint64(len(ethnicities))]
	x.raw(`,"extension":[{"url":"http://hl7.org/fhir/us/core/StructureDefinition/us-core-race","extension":[{"url":"ombCategory","valueCoding":{"system":"urn:oid:2.16.840.1.113883.6.238","code":"`)
	x.raw(race.code)
	x.raw(`","display":"`)
	x.raw(race.display)
	x.raw(`"}},{"url":"text","valueString":"`)
	x.raw(race.display)
	x.raw(`"}]},{"url":"http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity","extension":[{"url":"ombCategory","valueCoding":{"system":"urn:oid:2.16.840.1.113883.6.238","code":"`)
	x.raw(eth.code)
	x.raw(`","display":"`)
	x.raw(eth.display)
	x.raw(`"}},{"url":"text","valueString":"`)
	x.raw(eth.display)
	x.raw(`"}]},{"url":"http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex","valueCode":"`)
	if pr.female {
		x.raw(`F"}],`)
	} else {
		x.raw(`M"}],`)
	}
	x.raw(`"identifier":[{"system":"https://github.com/synthetichealth/synthea","value":"`)
	x.b = g.appendID(x.b, tPatient, r.p, 0)
	x.raw(`"},{"type":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v2-0203","code":"MR","display":"Medical Record Number"}],"text":"Medical Record Number"},"system":"http://hospital.smarthealthit.org","value":"MRN`)
	x.b = strconv.AppendUint(x.b, uint64(r.p)+100000, 10)
	x.raw(`"},{"type":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v2-0203","code":"SS","display":"Social Security Number"}],"text":"Social Security Number"},"system":"http://hl7.org/fhir/sid/us-ssn","value":"999-`)
	ssn := pr.h >> 44 % 1000000
	x.b = strconv.AppendUint(x.b, 10+ssn/10000%90, 10)
	x.b = append(x.b, '-')
	x.b = strconv.AppendUint(x.b, 1000+ssn%9000, 10)
	x.raw(`"}],"name":[{"use":"official","family":`)
	x.str(family)
	x.raw(`,"given":[`)
	x.str(given)
	x.raw(`],"prefix":["`)
	if pr.female {
		x.raw(`Ms."]}],`)
	} else {
		x.raw(`Mr."]}],`)
	}
	// Address and phone change with the version, so updates are visible.
	hv := g.hv(r, 1)
	x.raw(`"telecom":[{"system":"phone","value":"555-`)
	x.b = strconv.AppendUint(x.b, 100+hv%900, 10)
	x.b = append(x.b, '-')
	x.b = strconv.AppendUint(x.b, 1000+hv>>10%9000, 10)
	x.raw(`","use":"home"}],"gender":"`)
	if pr.female {
		x.raw(`female","birthDate":`)
	} else {
		x.raw(`male","birthDate":`)
	}
	x.date(pr.birth)
	c := &cities[hv>>24%uint64(len(cities))]
	x.raw(`,"address":[{"line":["`)
	x.b = strconv.AppendUint(x.b, 1+hv>>32%999, 10)
	x.b = append(x.b, ' ')
	x.raw(streets[hv>>42%uint64(len(streets))])
	x.raw(`"],"city":"`)
	x.raw(c.name)
	x.raw(`","state":"MA","postalCode":"`)
	x.raw(c.zip)
	x.raw(`","country":"US"}],"maritalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-MaritalStatus","code":"`)
	if pr.h>>50&1 == 1 {
		x.raw(`M","display":"Married"}],"text":"Married"}`)
	} else {
		x.raw(`S","display":"Never Married"}],"text":"Never Married"}`)
	}
	x.raw(`,"multipleBirthBoolean":false,"communication":[{"language":{"coding":[{"system":"urn:ietf:bcp:47","code":"en-US","display":"English"}],"text":"English"}}]`)
	x.raw(`,"generalPractitioner":[`)
	x.ref(g, tPractitioner, 0, int(pr.h>>12%uint64(g.nPract)))
	x.raw(`],"managingOrganization":`)
	x.ref(g, tOrganization, 0, int(pr.h>>14%uint64(g.nOrg)))
}

func (g *generator) subject(x *w, field string, r *res) {
	x.raw(`,"`)
	x.raw(field)
	x.raw(`":`)
	x.ref(g, tPatient, r.p, 0)
}

func (g *generator) encounterRef(x *w, r *res, e int) {
	x.raw(`,"encounter":`)
	x.ref(g, tEncounter, r.p, e)
}

func (g *generator) renderEncounter(x *w, r *res) {
	a := g.attrsOf(r.pr, r.typ, r.ord, r.ver)
	h := g.h(r, 1)
	start := g.encounterStart(r.pr, r.ord)
	end := start.Add(time.Duration(15+h%45) * time.Minute)
	x.raw(`,"status":"finished","class":{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"`)
	x.raw(encounterClasses[h>>8%uint64(len(encounterClasses))])
	x.raw(`"},"type":[`)
	x.coding(a.code)
	x.b = append(x.b, ']')
	g.subject(x, "subject", r)
	x.raw(`,"participant":[{"type":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ParticipationType","code":"PPRF","display":"primary performer"}],"text":"primary performer"}],"period":{"start":`)
	x.dateTime(start)
	x.raw(`,"end":`)
	x.dateTime(end)
	x.raw(`},"individual":`)
	x.ref(g, tPractitioner, 0, int(h>>16%uint64(g.nPract)))
	x.raw(`}],"period":{"start":`)
	x.dateTime(start)
	x.raw(`,"end":`)
	x.dateTime(end)
	x.raw(`},"location":[{"location":`)
	x.ref(g, tLocation, 0, int(h>>24%uint64(g.nLoc)))
	x.raw(`}],"serviceProvider":`)
	x.ref(g, tOrganization, 0, int(h>>32%uint64(g.nOrg)))
}

func (g *generator) renderObservation(x *w, r *res) {
	a := g.attrsOf(r.pr, r.typ, r.ord, r.ver)
	lk := g.obsCode(r.pr, r.ord)
	e := r.ord / 6
	t := g.encounterStart(r.pr, e)
	x.raw(`,"status":"`)
	x.raw(a.status)
	x.raw(`","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"`)
	x.raw(a.category)
	x.raw(`","display":"`)
	x.raw(a.category)
	x.raw(`"}]}],"code":`)
	x.coding(&code{sysLOINC, lk.loinc, lk.display})
	g.subject(x, "subject", r)
	g.encounterRef(x, r, e)
	x.raw(`,"effectiveDateTime":`)
	x.dateTime(t)
	x.raw(`,"issued":"`)
	x.b = t.In(est).Add(20*time.Millisecond).AppendFormat(x.b, "2006-01-02T15:04:05.000-07:00")
	x.b = append(x.b, '"')
	hv := g.hv(r, 2)
	if lk.loinc == "85354-9" {
		x.raw(`,"component":[{"code":{"coding":[{"system":"http://loinc.org","code":"8462-4","display":"Diastolic Blood Pressure"}],"text":"Diastolic Blood Pressure"},"valueQuantity":{"value":`)
		x.int(60 + int(hv%35))
		x.raw(`,"unit":"mm[Hg]","system":"http://unitsofmeasure.org","code":"mm[Hg]"}},{"code":{"coding":[{"system":"http://loinc.org","code":"8480-6","display":"Systolic Blood Pressure"}],"text":"Systolic Blood Pressure"},"valueQuantity":{"value":`)
		x.int(100 + int(hv>>16%60))
		x.raw(`,"unit":"mm[Hg]","system":"http://unitsofmeasure.org","code":"mm[Hg]"}}]`)
		return
	}
	x.raw(`,"valueQuantity":{"value":`)
	x.float(value(hv, lk.lo, lk.hi, lk.decimals))
	x.raw(`,"unit":"`)
	x.raw(lk.unit)
	x.raw(`","system":"http://unitsofmeasure.org","code":"`)
	x.raw(lk.unit)
	x.raw(`"}`)
}

func (g *generator) clinicalStatus(x *w, system, status string) {
	x.raw(`,"clinicalStatus":{"coding":[{"system":"`)
	x.raw(system)
	x.raw(`","code":"`)
	x.raw(status)
	x.raw(`"}]}`)
}

func (g *generator) renderCondition(x *w, r *res) {
	a := g.attrsOf(r.pr, r.typ, r.ord, r.ver)
	e := r.ord % r.pr.nEnc
	t := g.encounterStart(r.pr, e)
	if r.typ == tAllergyIntolerance {
		g.clinicalStatus(x, "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", a.clinicalStatus)
		x.raw(`,"verificationStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/allergyintolerance-verification","code":"confirmed"}]},"type":"allergy","category":["`)
		if a.code.code == "294505008" {
			x.raw(`medication"],"criticality":"high","code":`)
		} else {
			x.raw(`environment"],"criticality":"low","code":`)
		}
		x.coding(a.code)
		g.subject(x, "patient", r)
		x.raw(`,"recordedDate":`)
		x.dateTime(t)
		return
	}
	g.clinicalStatus(x, "http://terminology.hl7.org/CodeSystem/condition-clinical", a.clinicalStatus)
	x.raw(`,"verificationStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-ver-status","code":"confirmed"}]},"category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-category","code":"encounter-diagnosis","display":"Encounter Diagnosis"}]}],"code":`)
	x.coding(a.code)
	g.subject(x, "subject", r)
	g.encounterRef(x, r, e)
	x.raw(`,"onsetDateTime":`)
	x.dateTime(t)
	if a.clinicalStatus == "resolved" {
		x.raw(`,"abatementDateTime":`)
		x.dateTime(t.Add(time.Duration(7+g.h(r, 3)%60) * 24 * time.Hour))
	}
	x.raw(`,"recordedDate":`)
	x.dateTime(t)
}

func (g *generator) renderMedReq(x *w, r *res) {
	a := g.attrsOf(r.pr, r.typ, r.ord, r.ver)
	e := r.ord % r.pr.nEnc
	h := g.h(r, 4)
	x.raw(`,"status":"`)
	x.raw(a.status)
	x.raw(`","intent":"order","medicationCodeableConcept":`)
	x.coding(a.code)
	g.subject(x, "subject", r)
	g.encounterRef(x, r, e)
	x.raw(`,"authoredOn":`)
	x.dateTime(g.encounterStart(r.pr, e))
	x.raw(`,"requester":`)
	x.ref(g, tPractitioner, 0, int(h%uint64(g.nPract)))
	x.raw(`,"dosageInstruction":[{"sequence":1,"timing":{"repeat":{"frequency":`)
	x.int(1 + int(h>>8%3))
	x.raw(`,"period":1,"periodUnit":"d"}},"asNeededBoolean":false,"doseAndRate":[{"type":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/dose-rate-type","code":"ordered","display":"Ordered"}]},"doseQuantity":{"value":1}}]}]`)
}

func (g *generator) renderProcImm(x *w, r *res) {
	a := g.attrsOf(r.pr, r.typ, r.ord, r.ver)
	e := r.ord % r.pr.nEnc
	t := g.encounterStart(r.pr, e)
	x.raw(`,"status":"completed"`)
	if r.typ == tImmunization {
		x.raw(`,"vaccineCode":`)
		x.coding(a.code)
		g.subject(x, "patient", r)
		g.encounterRef(x, r, e)
		x.raw(`,"occurrenceDateTime":`)
		x.dateTime(t)
		x.raw(`,"primarySource":true,"lotNumber":"`)
		x.b = strconv.AppendUint(x.b, g.h(r, 5)%1000000, 36)
		x.raw(`"`)
		return
	}
	x.raw(`,"code":`)
	x.coding(a.code)
	g.subject(x, "subject", r)
	g.encounterRef(x, r, e)
	x.raw(`,"performedPeriod":{"start":`)
	x.dateTime(t)
	x.raw(`,"end":`)
	x.dateTime(t.Add(15 * time.Minute))
	x.raw(`},"location":`)
	x.ref(g, tLocation, 0, int(g.h(r, 6)%uint64(g.nLoc)))
}

func (g *generator) renderDiagReport(x *w, r *res) {
	a := g.attrsOf(r.pr, r.typ, r.ord, r.ver)
	e := r.ord
	t := g.encounterStart(r.pr, e)
	x.raw(`,"status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v2-0074","code":"LAB","display":"Laboratory"}]}],"code":`)
	x.coding(a.code)
	g.subject(x, "subject", r)
	g.encounterRef(x, r, e)
	x.raw(`,"effectiveDateTime":`)
	x.dateTime(t)
	x.raw(`,"issued":`)
	x.dateTime(t.Add(2 * time.Hour))
	x.raw(`,"performer":[`)
	x.ref(g, tOrganization, 0, int(g.h(r, 7)%uint64(g.nOrg)))
	x.raw(`],"result":[`)
	x.ref(g, tObservation, r.p, e*6+5)
	x.b = append(x.b, ']')
}

func (g *generator) renderDocRef(x *w, r *res) {
	e := (r.ord * 3) % r.pr.nEnc
	t := g.encounterStart(r.pr, e)
	x.raw(`,"status":"current","type":{"coding":[{"system":"http://loinc.org","code":"34117-2","display":"History and physical note"}],"text":"History and physical note"},"category":[{"coding":[{"system":"http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category","code":"clinical-note","display":"Clinical Note"}]}]`)
	g.subject(x, "subject", r)
	x.raw(`,"date":"`)
	x.b = t.In(est).AppendFormat(x.b, "2006-01-02T15:04:05.000-07:00")
	x.raw(`","author":[`)
	x.ref(g, tPractitioner, 0, int(g.h(r, 8)%uint64(g.nPract)))
	x.raw(`],"custodian":`)
	x.ref(g, tOrganization, 0, int(g.h(r, 9)%uint64(g.nOrg)))
	x.raw(`,"content":[{"attachment":{"contentType":"text/plain; charset=utf-8","url":"`)
	x.raw(r.base)
	x.raw(`/attachments/`)
	x.b = g.appendID(x.b, tDocumentReference, r.p, r.ord)
	x.raw(`.txt","size":`)
	x.int(len(g.attachment(r.p, r.ord)))
	x.raw(`},"format":{"system":"http://ihe.net/fhir/ValueSet/IHE.FormatCode.codesystem","code":"urn:ihe:iti:xds:2017:mimeTypeSufficient","display":"mimeType Sufficient"}}],"context":{"encounter":[`)
	x.ref(g, tEncounter, r.p, e)
	x.raw(`],"period":{"start":`)
	x.dateTime(t)
	x.raw(`,"end":`)
	x.dateTime(t.Add(30 * time.Minute))
	x.raw(`}}`)
}

// attachment is the text a DocumentReference's attachment URL serves.
func (g *generator) attachment(p uint32, ord int) []byte {
	h := hash4(g.seed, 0xa77, uint64(p), uint64(ord))
	b := []byte("Clinical note\n\nPatient seen for ")
	b = append(b, encounterTypes[h%uint64(len(encounterTypes))].display...)
	b = append(b, ".\nAssessment: stable. Plan: follow up in "...)
	b = strconv.AppendUint(b, 1+h>>8%12, 10)
	b = append(b, " months.\n"...)
	return b
}

func (g *generator) renderClaim(x *w, r *res) {
	e := r.ord
	t := g.encounterStart(r.pr, e)
	h := g.h(r, 10)
	hv := g.hv(r, 11)
	total := value(hv, 50, 2500, 2)
	payer := payers[mix(r.pr.h)%uint64(len(payers))]
	if r.typ == tExplanationOfBenefit {
		x.raw(`,"identifier":[{"system":"https://bluebutton.cms.gov/resources/variables/clm_id","value":"`)
		x.b = g.appendID(x.b, tClaim, r.p, e)
		x.raw(`"}]`)
	}
	x.raw(`,"status":"active","type":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/claim-type","code":"`)
	if h%3 == 0 {
		x.raw(`institutional"}]},"use":"claim"`)
	} else {
		x.raw(`professional"}]},"use":"claim"`)
	}
	g.subject(x, "patient", r)
	x.raw(`,"billablePeriod":{"start":`)
	x.dateTime(t)
	x.raw(`,"end":`)
	x.dateTime(t.Add(15 * time.Minute))
	x.raw(`},"created":`)
	x.dateTime(t.Add(15 * time.Minute))
	if r.typ == tExplanationOfBenefit {
		x.raw(`,"insurer":{"display":"`)
		x.raw(payer)
		x.raw(`"},"provider":`)
		x.ref(g, tPractitioner, 0, int(h>>8%uint64(g.nPract)))
		x.raw(`,"claim":`)
		x.ref(g, tClaim, r.p, e)
		x.raw(`,"outcome":"complete","insurance":[{"focal":true,"coverage":`)
		x.ref(g, tCoverage, r.p, 0)
		x.raw(`}],"item":[{"sequence":1,"productOrService":`)
		x.coding(g.attrsOf(r.pr, tEncounter, e, 1).code)
		x.raw(`,"servicedPeriod":{"start":`)
		x.dateTime(t)
		x.raw(`,"end":`)
		x.dateTime(t.Add(15 * time.Minute))
		x.raw(`},"encounter":[`)
		x.ref(g, tEncounter, r.p, e)
		x.raw(`],"net":{"value":`)
		x.float(total)
		x.raw(`,"currency":"USD"},"adjudication":[{"category":{"coding":[{"system":"https://bluebutton.cms.gov/resources/codesystem/adjudication","code":"https://bluebutton.cms.gov/resources/variables/line_coinsrnc_amt","display":"Line Beneficiary Coinsurance Amount"}]},"amount":{"value":`)
		x.float(value(hv>>20, 0, total*0.2, 2))
		x.raw(`,"currency":"USD"}},{"category":{"coding":[{"system":"https://bluebutton.cms.gov/resources/codesystem/adjudication","code":"https://bluebutton.cms.gov/resources/variables/line_prvdr_pmt_amt","display":"Line Provider Payment Amount"}]},"amount":{"value":`)
		x.float(value(hv>>30, total*0.5, total, 2))
		x.raw(`,"currency":"USD"}}]}],"total":[{"category":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/adjudication","code":"submitted","display":"Submitted Amount"}],"text":"Submitted Amount"},"amount":{"value":`)
		x.float(total)
		x.raw(`,"currency":"USD"}}],"payment":{"amount":{"value":`)
		x.float(value(hv>>30, total*0.5, total, 2))
		x.raw(`,"currency":"USD"}}`)
		return
	}
	x.raw(`,"provider":`)
	x.ref(g, tOrganization, 0, int(h>>8%uint64(g.nOrg)))
	x.raw(`,"priority":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/processpriority","code":"normal"}]},"insurance":[{"sequence":1,"focal":true,"coverage":{"display":"`)
	x.raw(payer)
	x.raw(`"}}],"item":[{"sequence":1,"productOrService":`)
	x.coding(g.attrsOf(r.pr, tEncounter, e, 1).code)
	x.raw(`,"encounter":[`)
	x.ref(g, tEncounter, r.p, e)
	x.raw(`]}],"total":{"value":`)
	x.float(total)
	x.raw(`,"currency":"USD"}`)
}

func (g *generator) renderCoverage(x *w, r *res) {
	payer := payers[mix(r.pr.h)%uint64(len(payers))]
	x.raw(`,"status":"active","type":{"text":"`)
	x.raw(payer)
	x.raw(`"}`)
	g.subject(x, "beneficiary", r)
	x.raw(`,"payor":[{"display":"`)
	x.raw(payer)
	x.raw(`"}],"period":{"start":`)
	x.dateTime(r.pr.birth)
	x.b = append(x.b, '}')
}

func (g *generator) renderPractitioner(x *w, r *res) {
	h := g.h(r, 12)
	female := h&1 == 1
	given := givenMale[h>>4%uint64(len(givenMale))]
	if female {
		given = givenFemale[h>>4%uint64(len(givenFemale))]
	}
	family := families[h>>12%uint64(len(families))]
	x.raw(`,"identifier":[{"system":"http://hl7.org/fhir/sid/us-npi","value":"99999`)
	x.b = strconv.AppendUint(x.b, 10000+uint64(r.ord)%90000, 10)
	x.raw(`"}],"active":true,"name":[{"family":`)
	x.str(family)
	x.raw(`,"given":[`)
	x.str(given)
	x.raw(`],"prefix":["Dr."]}],"telecom":[{"system":"email","value":`)
	x.str(given + "." + family + "@example.com")
	x.raw(`,"use":"work"}],"gender":"`)
	if female {
		x.raw(`female"`)
	} else {
		x.raw(`male"`)
	}
}

func (g *generator) renderOrgLoc(x *w, r *res) {
	h := g.hv(r, 13)
	c := &cities[h%uint64(len(cities))]
	name := orgNames[uint64(r.ord)%uint64(len(orgNames))]
	if r.typ == tLocation {
		x.raw(`,"status":"active","name":`)
		x.str(name + " CAMPUS " + strconv.Itoa(r.ord))
		x.raw(`,"managingOrganization":`)
		x.ref(g, tOrganization, 0, r.ord%g.nOrg)
	} else {
		x.raw(`,"identifier":[{"system":"https://github.com/synthetichealth/synthea","value":"ORG`)
		x.int(r.ord)
		x.raw(`"}],"active":true,"type":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/organization-type","code":"prov","display":"Healthcare Provider"}],"text":"Healthcare Provider"}],"name":`)
		x.str(name + " " + strconv.Itoa(r.ord))
	}
	x.raw(`,"telecom":[{"system":"phone","value":"617-555-`)
	x.b = strconv.AppendUint(x.b, 1000+h>>8%9000, 10)
	x.raw(`"}],"address":`)
	if r.typ == tOrganization {
		x.b = append(x.b, '[')
	}
	x.raw(`{"line":["`)
	x.b = strconv.AppendUint(x.b, 1+h>>20%999, 10)
	x.b = append(x.b, ' ')
	x.raw(streets[h>>30%uint64(len(streets))])
	x.raw(`"],"city":"`)
	x.raw(c.name)
	x.raw(`","state":"MA","postalCode":"`)
	x.raw(c.zip)
	x.raw(`","country":"US"}`)
	if r.typ == tOrganization {
		x.b = append(x.b, ']')
	}
}
