package fhirpath

import "strings"

// primitiveTypes are the FHIR primitive type names, as they appear in
// ofType() and in column types (lower camel case).
var primitiveTypes = map[string]bool{
	"base64Binary": true, "boolean": true, "canonical": true, "code": true,
	"date": true, "dateTime": true, "decimal": true, "id": true, "instant": true,
	"integer": true, "integer64": true, "markdown": true, "oid": true,
	"positiveInt": true, "string": true, "time": true, "unsignedInt": true,
	"uri": true, "url": true, "uuid": true, "xhtml": true,
}

// complexTypes are FHIR data types that can appear as a choice suffix
// (valueQuantity, onsetPeriod, ...). R4 and R5 combined.
var complexTypes = map[string]bool{
	"Address": true, "Age": true, "Annotation": true, "Attachment": true,
	"Availability": true, "CodeableConcept": true, "CodeableReference": true,
	"Coding": true, "ContactDetail": true, "ContactPoint": true, "Contributor": true,
	"Count": true, "DataRequirement": true, "Distance": true, "Dosage": true,
	"Duration": true, "Expression": true, "ExtendedContactDetail": true,
	"HumanName": true, "Identifier": true, "Meta": true, "MonetaryComponent": true,
	"Money": true, "ParameterDefinition": true, "Period": true, "Quantity": true,
	"Range": true, "Ratio": true, "RatioRange": true, "Reference": true,
	"RelatedArtifact": true, "SampledData": true, "Signature": true, "Timing": true,
	"TriggerDefinition": true, "UsageContext": true, "VirtualServiceDetail": true,
}

// choiceSuffix maps an upper-camel suffix found in a JSON key (the "Quantity"
// of valueQuantity, the "DateTime" of effectiveDateTime) to the FHIR type
// name. The strings are static, so recording them on items costs nothing.
var choiceSuffix = func() map[string]string {
	m := make(map[string]string, len(primitiveTypes)+len(complexTypes))
	for t := range primitiveTypes {
		m[strings.ToUpper(t[:1])+t[1:]] = t
	}
	for t := range complexTypes {
		m[t] = t
	}
	return m
}()

// IsPrimitiveType reports whether t names a FHIR primitive type.
func IsPrimitiveType(t string) bool { return primitiveTypes[t] }

// IsComplexType reports whether t names a FHIR complex data type.
func IsComplexType(t string) bool { return complexTypes[t] }

// IsResourceType reports whether t names a FHIR resource type (R4 or R5).
func IsResourceType(t string) bool { return resourceTypes[t] }

// isStringType reports whether values of FHIR type t are strings in JSON
// and compare as strings.
func isStringType(t string) bool {
	switch t {
	case "string", "code", "id", "uri", "url", "canonical", "markdown", "oid", "uuid", "base64Binary", "xhtml":
		return true
	}
	return false
}

// resourceTypes lists the FHIR R4 and R5 resource types.
var resourceTypes = func() map[string]bool {
	names := `Account ActivityDefinition ActorDefinition AdministrableProductDefinition AdverseEvent
AllergyIntolerance Appointment AppointmentResponse ArtifactAssessment AuditEvent Basic Binary
BiologicallyDerivedProduct BiologicallyDerivedProductDispense BodyStructure Bundle CapabilityStatement
CarePlan CareTeam CatalogEntry ChargeItem ChargeItemDefinition Citation Claim ClaimResponse
ClinicalImpression ClinicalUseDefinition CodeSystem Communication CommunicationRequest
CompartmentDefinition Composition ConceptMap Condition ConditionDefinition Consent Contract Coverage
CoverageEligibilityRequest CoverageEligibilityResponse DetectedIssue Device DeviceAssociation
DeviceDefinition DeviceDispense DeviceMetric DeviceRequest DeviceUsage DeviceUseStatement
DiagnosticReport DocumentManifest DocumentReference EffectEvidenceSynthesis Encounter EncounterHistory
Endpoint EnrollmentRequest EnrollmentResponse EpisodeOfCare EventDefinition Evidence EvidenceReport
EvidenceVariable ExampleScenario ExplanationOfBenefit FamilyMemberHistory Flag FormularyItem
GenomicStudy Goal GraphDefinition Group GuidanceResponse HealthcareService ImagingSelection
ImagingStudy Immunization ImmunizationEvaluation ImmunizationRecommendation ImplementationGuide
Ingredient InsurancePlan InventoryItem InventoryReport Invoice Library Linkage List Location
ManufacturedItemDefinition Measure MeasureReport Media Medication MedicationAdministration
MedicationDispense MedicationKnowledge MedicationRequest MedicationStatement MedicinalProduct
MedicinalProductAuthorization MedicinalProductContraindication MedicinalProductDefinition
MedicinalProductIndication MedicinalProductIngredient MedicinalProductInteraction
MedicinalProductManufactured MedicinalProductPackaged MedicinalProductPharmaceutical
MedicinalProductUndesirableEffect MessageDefinition MessageHeader MolecularDefinition
MolecularSequence NamingSystem NutritionIntake NutritionOrder NutritionProduct Observation
ObservationDefinition OperationDefinition OperationOutcome Organization OrganizationAffiliation
PackagedProductDefinition Parameters Patient PaymentNotice PaymentReconciliation Permission Person
PlanDefinition Practitioner PractitionerRole Procedure Provenance Questionnaire QuestionnaireResponse
RegulatedAuthorization RelatedPerson RequestGroup RequestOrchestration Requirements ResearchDefinition
ResearchElementDefinition ResearchStudy ResearchSubject RiskAssessment RiskEvidenceSynthesis Schedule
SearchParameter ServiceRequest Slot Specimen SpecimenDefinition StructureDefinition StructureMap
Subscription SubscriptionStatus SubscriptionTopic Substance SubstanceDefinition SubstanceNucleicAcid
SubstancePolymer SubstanceProtein SubstanceReferenceInformation SubstanceSourceMaterial
SubstanceSpecification SupplyDelivery SupplyRequest Task TerminologyCapabilities TestPlan TestReport
TestScript Transport ValueSet VerificationResult VisionPrescription ViewDefinition`
	m := map[string]bool{}
	for _, n := range strings.Fields(names) {
		m[n] = true
	}
	return m
}()
