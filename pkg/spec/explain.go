package spec

import (
	"fmt"
	"reflect"
	"strings"
)

// Explain returns the field reference for a field path ("" for the whole
// document; "optimizer" and "spec.optimizer" are the same; a leading
// "trainingjob." is accepted as kubectl explain accepts the kind name). It
// prints the field's type, default, allowed values and description, and for
// an object the same for each of its fields.
func Explain(path string) (string, error) {
	p := strings.TrimSpace(path)
	if low := strings.ToLower(p); low == "trainingjob" || low == "trainingjobs" {
		p = ""
	} else if strings.HasPrefix(low, "trainingjob.") {
		p = p[len("trainingjob."):]
	}
	canon, t, f, ferr := resolvePath(p)
	if ferr != nil {
		return "", fmt.Errorf("explain: %w", ferr)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "KIND:     %s\nVERSION:  %s\n\n", Kind, APIVersion)
	desc := "A training run: the model to build, the data to read, and how to optimise it."
	if f != nil {
		desc = f.desc
		fmt.Fprintf(&b, "FIELD:    %s <%s>\n", canon, typeName(t))
		if d := describeDefault(canon, f); d != "" {
			fmt.Fprintf(&b, "DEFAULT:  %s\n", d)
		}
		if a := enums()[canon]; len(a) > 0 {
			fmt.Fprintf(&b, "ALLOWED:  %s\n", strings.Join(a, ", "))
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "DESCRIPTION:\n    %s\n", desc)
	if t.Kind() == reflect.Struct {
		b.WriteString("\nFIELDS:\n")
		writeFields(&b, canon, t, "  ", false)
	}
	return b.String(), nil
}

// ExplainRecursive lists every field under path as an indented tree with
// types, like kubectl explain --recursive.
func ExplainRecursive(path string) (string, error) {
	canon, t, _, ferr := resolvePath(strings.TrimSpace(path))
	if ferr != nil {
		return "", fmt.Errorf("explain: %w", ferr)
	}
	var b strings.Builder
	if canon != "" {
		fmt.Fprintf(&b, "%s <%s>\n", canon, typeName(t))
	}
	if t.Kind() == reflect.Struct {
		writeFields(&b, canon, t, "  ", true)
	}
	return b.String(), nil
}

func writeFields(b *strings.Builder, path string, t reflect.Type, indent string, recursive bool) {
	all := enums()
	for _, f := range fieldsOf(t) {
		p := joinPath(path, f.name)
		if recursive {
			fmt.Fprintf(b, "%s%s <%s>\n", indent, f.name, typeName(f.typ))
			if f.typ.Kind() == reflect.Struct {
				writeFields(b, p, f.typ, indent+"  ", true)
			}
			continue
		}
		var notes []string
		if d := describeDefault(p, &f); d != "" {
			notes = append(notes, "default: "+d)
		}
		if a := all[p]; len(a) > 0 {
			notes = append(notes, "allowed: "+strings.Join(a, ", "))
		}
		line := fmt.Sprintf("%s%-16s<%s>", indent, f.name, typeName(f.typ))
		if len(notes) > 0 {
			line = fmt.Sprintf("%-44s%s", line, strings.Join(notes, "; "))
		}
		fmt.Fprintf(b, "%s\n%s    %s\n", strings.TrimRight(line, " "), indent, f.desc)
	}
}

// describeDefault shows the default of the field at path as a user writes
// it in YAML.
func describeDefault(path string, f *fieldInfo) string {
	def := f.def
	switch def {
	case "":
		return ""
	case "reference":
		if v, ok := referenceDefault(strings.TrimSuffix(path, "."+f.name), f.goName); ok {
			return formatValue(v)
		}
		return "the optimizer's reference value"
	case "derived":
		if d := describeSharedDefault(path); d != "" {
			return d
		}
		return "derived (see description)"
	case `""`:
		return `""`
	}
	return strings.Trim(def, `"`)
}

// FieldPaths lists every field path of the schema, for shell completion.
func FieldPaths() []string {
	var out []string
	var walk func(string, reflect.Type)
	walk = func(path string, t reflect.Type) {
		for _, f := range fieldsOf(t) {
			p := joinPath(path, f.name)
			out = append(out, p)
			if f.typ.Kind() == reflect.Struct {
				walk(p, f.typ)
			}
		}
	}
	walk("", reflect.TypeOf(TrainingJob{}))
	return out
}
