package bulktest

// Terminology tables for the generator. Codes are real (LOINC, SNOMED CT,
// RxNorm, CVX, UCUM) so views and filters behave as on Synthea data.

type code struct{ system, code, display string }

const (
	sysSNOMED = "http://snomed.info/sct"
	sysLOINC  = "http://loinc.org"
	sysRxNorm = "http://www.nlm.nih.gov/research/umls/rxnorm"
	sysCVX    = "http://hl7.org/fhir/sid/cvx"
	sysUCUM   = "http://unitsofmeasure.org"
)

type labKind struct {
	loinc, display, unit string
	lo, hi               float64 // value range
	decimals             int
}

// vitals are in observation-kind order 0..4 (see renderObservation).
var vitals = []labKind{
	{"8302-2", "Body Height", "cm", 150, 195, 1},
	{"29463-7", "Body Weight", "kg", 45, 120, 1},
	{"39156-5", "Body mass index (BMI) [Ratio]", "kg/m2", 18, 38, 2},
	{"85354-9", "Blood pressure panel with all children optional", "mm[Hg]", 0, 0, 0},
	{"8867-4", "Heart rate", "/min", 55, 100, 0},
}

var labs = []labKind{
	{"2339-0", "Glucose [Mass/volume] in Blood", "mg/dL", 65, 180, 1},
	{"4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 4.5, 9.5, 1},
	{"2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", 140, 280, 1},
	{"2571-8", "Triglycerides", "mg/dL", 60, 300, 1},
	{"18262-6", "Cholesterol in LDL [Mass/volume] in Serum or Plasma by Direct assay", "mg/dL", 60, 190, 1},
	{"2085-9", "Cholesterol in HDL [Mass/volume] in Serum or Plasma", "mg/dL", 30, 90, 1},
	{"6299-2", "Urea nitrogen [Mass/volume] in Blood", "mg/dL", 7, 25, 1},
	{"38483-4", "Creatinine [Mass/volume] in Blood", "mg/dL", 0.6, 1.4, 2},
	{"2947-0", "Sodium [Moles/volume] in Blood", "mmol/L", 134, 146, 1},
	{"6298-4", "Potassium [Moles/volume] in Blood", "mmol/L", 3.4, 5.2, 1},
	{"718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 11, 17.5, 1},
	{"6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", 3.5, 11, 1},
}

var labPanels = []code{
	{sysLOINC, "51990-0", "Basic metabolic panel - Blood"},
	{sysLOINC, "57698-3", "Lipid panel with direct LDL - Serum or Plasma"},
	{sysLOINC, "58410-2", "Complete blood count (hemogram) panel - Blood by Automated count"},
	{sysLOINC, "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood"},
}

var conditions = []code{
	{sysSNOMED, "44054006", "Diabetes mellitus type 2 (disorder)"},
	{sysSNOMED, "38341003", "Hypertensive disorder, systemic arterial (disorder)"},
	{sysSNOMED, "195662009", "Acute viral pharyngitis (disorder)"},
	{sysSNOMED, "10509002", "Acute bronchitis (disorder)"},
	{sysSNOMED, "65363002", "Otitis media (disorder)"},
	{sysSNOMED, "444814009", "Viral sinusitis (disorder)"},
	{sysSNOMED, "55822004", "Hyperlipidemia (disorder)"},
	{sysSNOMED, "195967001", "Asthma (disorder)"},
	{sysSNOMED, "162864005", "Body mass index 30+ - obesity (finding)"},
	{sysSNOMED, "271737000", "Anemia (disorder)"},
	{sysSNOMED, "62106007", "Concussion with no loss of consciousness (disorder)"},
	{sysSNOMED, "40055000", "Chronic sinusitis (disorder)"},
	{sysSNOMED, "15777000", "Prediabetes (finding)"},
	{sysSNOMED, "239873007", "Osteoarthritis of knee (disorder)"},
}

var meds = []code{
	{sysRxNorm, "860975", "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet"},
	{sysRxNorm, "314076", "lisinopril 10 MG Oral Tablet"},
	{sysRxNorm, "197361", "amLODIPine 5 MG Oral Tablet"},
	{sysRxNorm, "308192", "Amoxicillin 500 MG Oral Tablet"},
	{sysRxNorm, "313820", "Acetaminophen 160 MG Chewable Tablet"},
	{sysRxNorm, "310965", "Ibuprofen 200 MG Oral Tablet"},
	{sysRxNorm, "617314", "atorvastatin 10 MG Oral Tablet"},
	{sysRxNorm, "745679", "200 ACTUAT Albuterol 0.09 MG/ACTUAT Metered Dose Inhaler"},
	{sysRxNorm, "834060", "Penicillin V Potassium 250 MG Oral Tablet"},
	{sysRxNorm, "1049221", "Acetaminophen 325 MG / Oxycodone Hydrochloride 5 MG Oral Tablet"},
}

var procedures = []code{
	{sysSNOMED, "430193006", "Medication Reconciliation (procedure)"},
	{sysSNOMED, "399208008", "Plain chest X-ray (procedure)"},
	{sysSNOMED, "117015009", "Throat culture (procedure)"},
	{sysSNOMED, "76601001", "Intramuscular injection"},
	{sysSNOMED, "73761001", "Colonoscopy"},
	{sysSNOMED, "710824005", "Assessment of health and social care needs (procedure)"},
	{sysSNOMED, "428191000124101", "Documentation of current medications"},
	{sysSNOMED, "171207006", "Depression screening (procedure)"},
}

var vaccines = []code{
	{sysCVX, "140", "Influenza, seasonal, injectable, preservative free"},
	{sysCVX, "113", "Td (adult) preservative free"},
	{sysCVX, "133", "Pneumococcal conjugate PCV 13"},
	{sysCVX, "08", "Hep B, adolescent or pediatric"},
	{sysCVX, "21", "varicella"},
	{sysCVX, "10", "IPV"},
	{sysCVX, "208", "SARS-COV-2 (COVID-19) vaccine, mRNA, spike protein, LNP, preservative free, 30 mcg/0.3mL dose"},
}

var allergies = []code{
	{sysSNOMED, "419474003", "Allergy to mould"},
	{sysSNOMED, "300913006", "Shellfish allergy"},
	{sysSNOMED, "232350006", "House dust mite allergy"},
	{sysSNOMED, "418689008", "Allergy to grass pollen"},
	{sysSNOMED, "91930004", "Allergy to eggs"},
	{sysSNOMED, "294505008", "Allergy to penicillin"},
}

var encounterTypes = []code{
	{sysSNOMED, "410620009", "Well child visit (procedure)"},
	{sysSNOMED, "185345009", "Encounter for symptom"},
	{sysSNOMED, "162673000", "General examination of patient (procedure)"},
	{sysSNOMED, "185349003", "Encounter for check up (procedure)"},
	{sysSNOMED, "50849002", "Emergency room admission (procedure)"},
	{sysSNOMED, "390906007", "Follow-up encounter (procedure)"},
}

var encounterClasses = []string{"AMB", "AMB", "AMB", "AMB", "EMER", "IMP"}

var givenMale = []string{"James", "Robert", "John", "Michael", "David", "William", "Richard", "Joseph", "Thomas", "Carlos", "Wei", "Ahmed", "Luis", "Kenji", "Noah", "Liam"}
var givenFemale = []string{"Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara", "Susan", "Jessica", "Sarah", "Maria", "Mei", "Fatima", "Sofia", "Yuki", "Emma", "Olivia"}
var families = []string{"Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson", "Walker", "Young", "Nguyen", "Kim", "Chen", "Patel", "O'Brien", "Lindgren", "Crona", "Swift"}
var streets = []string{"Main St", "Oak Ave", "Pine Rd", "Maple Dr", "Cedar Ln", "Elm St", "Washington Blvd", "Lake View Rd", "Bridge St", "Charles Street"}

type city struct{ name, zip string }

var cities = []city{{"Boston", "02114"}, {"Worcester", "01602"}, {"Springfield", "01103"}, {"Lowell", "01850"}, {"Cambridge", "02139"}, {"Pittsfield", "01201"}, {"Taunton", "02780"}, {"Quincy", "02169"}}

type raceCode struct{ code, display string }

var races = []raceCode{{"2106-3", "White"}, {"2054-5", "Black or African American"}, {"2028-9", "Asian"}, {"1002-5", "American Indian or Alaska Native"}, {"2131-1", "Other Race"}}
var ethnicities = []raceCode{{"2186-5", "Not Hispanic or Latino"}, {"2135-2", "Hispanic or Latino"}}

var orgNames = []string{"MASSACHUSETTS GENERAL HOSPITAL", "BOSTON MEDICAL CENTER", "LOWELL GENERAL HOSPITAL", "BERKSHIRE MEDICAL CENTER", "HALLMARK HEALTH SYSTEM", "BAYSTATE MEDICAL CENTER", "CAMBRIDGE HEALTH ALLIANCE", "SOUTH SHORE HOSPITAL"}
var payers = []string{"UnitedHealthcare", "Blue Cross Blue Shield", "Aetna", "Medicare", "Medicaid", "Cigna Health", "Humana"}
