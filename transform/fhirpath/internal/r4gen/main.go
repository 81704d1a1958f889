// Command r4gen writes r4elements.txt, the FHIR R4 element types the
// FHIRPath package infers column types from, from the FHIR R4 definitions
// as compiled into Google's FHIR protos:
//
//	cd transform/fhirpath/internal/r4gen && go run . > ../../r4elements.txt
//
// Each resource and complex datatype is a line with its name, followed by
// its elements, one per line, indented by their depth with tabs: "name
// type", with backbone elements inline (typed BackboneElement). Choice
// elements are typed "*"; repeating ones end in "[]". Extensions and the
// ids of elements are left out.
package main

import (
	"fmt"
	"os"
	"sort"
	"strings"

	annpb "github.com/google/fhir/go/proto/google/fhir/proto/annotations_go_proto"
	dtpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/datatypes_go_proto"
	bcrpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/bundle_and_contained_resource_go_proto"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

var lines = map[string]string{}

func sdName(md protoreflect.MessageDescriptor) string {
	u, _ := proto.GetExtension(md.Options(), annpb.E_FhirStructureDefinitionUrl).(string)
	if u == "" {
		return ""
	}
	return u[strings.LastIndex(u, "/")+1:]
}

func isChoice(md protoreflect.MessageDescriptor) bool {
	b, _ := proto.GetExtension(md.Options(), annpb.E_IsChoiceType).(bool)
	return b
}

// typeOf is the FHIR type of a field's message; nested is true for a
// backbone element to walk inline.
func typeOf(owner, md protoreflect.MessageDescriptor) (string, bool) {
	if isChoice(md) {
		return "*", false
	}
	if n := sdName(md); n != "" {
		if md.Parent() == owner || strings.HasPrefix(string(md.FullName()), string(owner.FullName())+".") {
			return "BackboneElement", true
		}
		return n, false
	}
	if v := md.Fields().ByName("value"); v != nil && v.Kind() == protoreflect.EnumKind {
		return "code", false
	}
	if md.Parent() != nil {
		if _, ok := md.Parent().(protoreflect.MessageDescriptor); ok {
			return "BackboneElement", true
		}
	}
	return string(md.Name()), false
}

func walk(root protoreflect.MessageDescriptor, prefix string, md protoreflect.MessageDescriptor, depth int) {
	if depth > 8 {
		return
	}
	fs := md.Fields()
	for i := 0; i < fs.Len(); i++ {
		f := fs.Get(i)
		name := f.JSONName()
		if f.Kind() != protoreflect.MessageKind {
			continue
		}
		t, nested := typeOf(md, f.Message())
		if name == "contained" {
			t = "Resource"
		}
		if f.IsList() {
			t += "[]"
		}
		lines[prefix+"."+name] = t
		if nested {
			walk(root, prefix+"."+name, f.Message(), depth+1)
		}
	}
}

func main() {
	_ = &bcrpb.ContainedResource{}
	_ = &dtpb.Quantity{}
	cr := (&bcrpb.ContainedResource{}).ProtoReflect().Descriptor()
	oneofs := cr.Fields()
	for i := 0; i < oneofs.Len(); i++ {
		md := oneofs.Get(i).Message()
		walk(md, sdName(md), md, 0)
	}
	protoregistry.GlobalTypes.RangeMessages(func(mt protoreflect.MessageType) bool {
		md := mt.Descriptor()
		if !strings.HasPrefix(string(md.FullName()), "google.fhir.r4.core.") || strings.Count(string(md.FullName()), ".") != 4 {
			return true
		}
		n := sdName(md)
		if n == "" || n[0] < 'A' || n[0] > 'Z' || md.Fields().ByName("value") != nil && md.Fields().Len() <= 3 {
			return true
		}
		if _, isRes := lines[n+".meta"]; isRes {
			return true
		}
		walk(md, n, md, 0)
		return true
	})
	keys := make([]string, 0, len(lines))
	for k := range lines {
		parts := strings.Split(k, ".")
		last := parts[len(parts)-1]
		if last == "extension" || last == "modifierExtension" || last == "id" && len(parts) > 2 {
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	root := ""
	for _, k := range keys {
		parts := strings.Split(k, ".")
		if parts[0] != root {
			root = parts[0]
			fmt.Fprintln(os.Stdout, root)
		}
		fmt.Fprintf(os.Stdout, "%s%s %s\n", strings.Repeat("\t", len(parts)-1), parts[len(parts)-1], lines[k])
	}
}
