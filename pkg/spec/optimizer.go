package spec

import (
	"fmt"
	"math"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"github.com/ternml/tern/pkg/optim"
)

// adamwDefaults are tern's AdamW settings: the GPT-2/LLaMA pretraining
// values (β2 = 0.95, weight decay 0.1) rather than torch's (0.999, 0.01),
// because short runs on small models are what tern's presets do.
var adamwDefaults = optim.AdamWConfig{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1}

// optimizerInfo ties a spec.optimizer.name to its section and its reference
// configuration in pkg/optim. The reference is where every default of the
// optimizer comes from: the section's fields by Go field name, and the
// shared fields (Beta1, Beta2, Eps, WeightDecay) where the configuration has
// one; a shared field the configuration lacks is not used by the optimizer.
type optimizerInfo struct {
	name    string
	section string // JSON name of its OptimizerSpec section; "" for none
	ref     func() any
}

// optimizers is the table of supported optimizers, in the order users see
// them. adam-mini's section holds its partition only: the head size comes
// from the model.
var optimizers = []optimizerInfo{
	{"adamw", "", func() any { return adamwDefaults }},
	{"adafactor", "adafactor", func() any { return optim.DefaultAdafactorConfig() }},
	{"came", "came", func() any { return optim.DefaultCAMEConfig() }},
	{"adam-mini", "adam-mini", func() any { return optim.DefaultAdamMiniConfig() }},
	{"galore", "galore", func() any { return optim.DefaultGaLoreConfig() }},
	{"apollo", "apollo", func() any { return optim.DefaultApolloConfig() }},
	{"apollo-mini", "apollo-mini", func() any { return optim.DefaultApolloMiniConfig() }},
	{"microadam", "microadam", func() any { return optim.DefaultMicroAdamConfig() }},
	{"grass", "grass", func() any { return optim.DefaultGrassConfig() }},
	{"demo", "demo", func() any { return optim.DefaultDemoConfig() }},
}

func optimizerNames() []string {
	out := make([]string, len(optimizers))
	for i, o := range optimizers {
		out[i] = o.name
	}
	return out
}

// lookupOptimizer returns the table entry for a name; an unknown name (which
// Validate reports) is treated as adamw so that it causes no other errors.
func lookupOptimizer(name string) (optimizerInfo, bool) {
	for _, o := range optimizers {
		if o.name == name {
			return o, true
		}
	}
	return optimizers[0], false
}

// sharedOptimizerFields are the OptimizerSpec fields whose meaning is the
// same in every optimizer that has them, by Go field name and JSON name.
var sharedOptimizerFields = []struct{ goName, name string }{
	{"Beta1", "beta1"}, {"Beta2", "beta2"}, {"Eps", "eps"}, {"WeightDecay", "weightDecay"},
}

func isSharedField(name string) bool {
	for _, f := range sharedOptimizerFields {
		if f.name == name {
			return true
		}
	}
	return false
}

// sharedDefault is the default of a shared field for an optimizer, and
// whether the optimizer uses the field at all.
func sharedDefault(opt optimizerInfo, goName string) (float64, bool) {
	f := reflect.ValueOf(opt.ref()).FieldByName(goName)
	if !f.IsValid() {
		return 0, false
	}
	return f.Float(), true
}

// referenceDefault is the default of field goName of the section at
// sectionPath (e.g. spec.optimizer.galore): the same-named field of the
// section's reference configuration.
func referenceDefault(sectionPath, goName string) (reflect.Value, bool) {
	section, ok := strings.CutPrefix(sectionPath, "spec.optimizer.")
	if !ok {
		return reflect.Value{}, false
	}
	for _, o := range optimizers {
		if o.section == section && section != "" {
			f := reflect.ValueOf(o.ref()).FieldByName(goName)
			return f, f.IsValid()
		}
	}
	return reflect.Value{}, false
}

// formatValue writes a default as a user would in YAML.
func formatValue(v reflect.Value) string {
	switch v.Kind() {
	case reflect.Float32, reflect.Float64:
		return formatFloat(v.Float())
	case reflect.String:
		return v.String()
	}
	return fmt.Sprint(v.Interface())
}

// formatFloat writes 1e-8 rather than Go's 1e-08.
func formatFloat(x float64) string {
	s := strconv.FormatFloat(x, 'g', -1, 64)
	s = strings.Replace(s, "e-0", "e-", 1)
	return strings.Replace(s, "e+0", "e+", 1)
}

// describeSharedDefault lists a shared field's default per optimizer, e.g.
// "0.999 for came, adam-mini, ...; 0.95 for adamw; not used by adafactor".
// It returns "" for a path that is not a shared field.
func describeSharedDefault(path string) string {
	name, ok := strings.CutPrefix(path, "spec.optimizer.")
	if !ok || !isSharedField(name) {
		return ""
	}
	var goName string
	for _, f := range sharedOptimizerFields {
		if f.name == name {
			goName = f.goName
		}
	}
	var order []string
	groups := map[string][]string{}
	for _, o := range optimizers {
		key := "not used by"
		if v, ok := sharedDefault(o, goName); ok {
			key = formatFloat(v) + " for"
		}
		if groups[key] == nil && key != "not used by" {
			order = append(order, key)
		}
		groups[key] = append(groups[key], o.name)
	}
	if groups["not used by"] != nil {
		order = append(order, "not used by")
	}
	parts := make([]string, len(order))
	for i, k := range order {
		parts[i] = k + " " + strings.Join(groups[k], ", ")
	}
	return strings.Join(parts, "; ")
}

// section returns the OptimizerSpec field holding the section with the given
// JSON name (a nil pointer when it is not set).
func (o *OptimizerSpec) section(name string) (reflect.Value, fieldInfo) {
	v := reflect.ValueOf(o).Elem()
	f, ok := fieldByName(v.Type(), name)
	if !ok || !f.ptr {
		// The table and the struct are both in this package; a test checks
		// that they agree.
		panic("spec: optimizer section " + name + " missing from OptimizerSpec")
	}
	return v.Field(f.index), f
}

// applyDefaults creates the chosen optimizer's section when the document
// leaves it out and fills the optimizer's defaults: the section's fields
// from its reference configuration and the shared fields from the same
// configuration, or 0 where the optimizer does not use them.
func (o *OptimizerSpec) applyDefaults(present func(string) bool) {
	const base = "spec.optimizer"
	info, _ := lookupOptimizer(o.Name)
	if info.section != "" {
		sv, f := o.section(info.section)
		if sv.IsNil() {
			sv.Set(reflect.New(f.typ))
		}
		fillTagDefaults(base+"."+info.section, sv.Elem(), present)
	}
	v := reflect.ValueOf(o).Elem()
	for _, f := range sharedOptimizerFields {
		fv := v.FieldByName(f.goName)
		if present(base+"."+f.name) || !fv.IsZero() {
			continue
		}
		d, _ := sharedDefault(info, f.goName)
		fv.SetFloat(d)
	}
}

// validate checks the optimizer section of a resolved job: the name, the
// rules that tie the shared fields and the sections to it, and each
// hyperparameter's range (the last through pkg/optim's own checks, so the
// allowed ranges are stated once).
func (o *OptimizerSpec) validate(v validator) {
	const base = "spec.optimizer"
	v.enum(base+".name", o.Name, "supported")
	info, _ := lookupOptimizer(o.Name)
	before := len(*v.es)

	for _, sec := range optimizers {
		if sec.section == "" || sec.section == info.section {
			continue
		}
		if sv, _ := o.section(sec.section); !sv.IsNil() {
			v.es.add(base+"."+sec.section, "set, but spec.optimizer.name is %s; remove it or set name: %s", o.Name, sec.name)
		}
	}

	sv := reflect.ValueOf(o).Elem()
	for _, f := range sharedOptimizerFields {
		p := base + "." + f.name
		got := sv.FieldByName(f.goName).Float()
		if _, used := sharedDefault(info, f.goName); !used {
			if got != 0 {
				hint := ""
				if info.section != "" {
					hint = fmt.Sprintf(" (its own settings: ternctl explain %s.%s)", base, info.section)
				}
				v.es.add(p, "not used by %s%s; remove it", o.Name, hint)
			}
			continue
		}
		switch f.name {
		case "beta1", "beta2":
			if math.IsNaN(got) || got < 0 || got >= 1 {
				v.es.add(p, "must be in [0, 1), got %g", got)
			}
		case "eps":
			v.num(p, got, 0, math.MaxFloat64, true)
		case "weightDecay":
			v.num(p, got, 0, math.MaxFloat64, false)
		}
	}
	if info.section != "" {
		if secv, sf := o.section(info.section); !secv.IsNil() {
			for _, f := range fieldsOf(sf.typ) {
				p := base + "." + info.section + "." + f.name
				if _, ok := v.enums[p]; ok {
					v.enum(p, secv.Elem().Field(f.index).String(), "allowed")
				}
			}
		}
	}
	// pkg/optim states only the first problem of a configuration; ask it
	// only about what the checks above did not already reject.
	if len(*v.es) > before {
		return
	}
	if err := o.check(); err != nil {
		p, msg := optimPath(err.Error(), info)
		v.es.add(p, "%s", msg)
	}
}

// check builds the chosen optimizer over no parameters, which runs every
// hyperparameter check of its constructor.
func (o *OptimizerSpec) check() error {
	var err error
	switch o.Name {
	case "adamw":
		_, err = optim.NewAdamW(nil, o.AdamWConfig())
	case "adafactor":
		_, err = optim.NewAdafactor(nil, o.AdafactorConfig())
	case "came":
		_, err = optim.NewCAME(nil, o.CAMEConfig())
	case "adam-mini":
		_, err = optim.NewAdamMini(nil, o.AdamMiniConfig())
	case "galore":
		_, err = optim.NewGaLore(nil, o.GaLoreConfig())
	case "apollo", "apollo-mini":
		_, err = optim.NewApollo(nil, o.ApolloConfig())
	case "microadam":
		err = o.MicroAdamConfig().Validate()
	case "grass":
		_, err = optim.NewGrass(nil, o.GrassConfig())
	case "demo":
		err = o.DemoConfig().Validate()
	}
	return err
}

// optimMessage matches pkg/optim's hyperparameter errors,
// "optimizer.<optimizer>.<field> <what is allowed>".
var optimMessage = regexp.MustCompile(`^optimizer\.([a-z-]+)\.([A-Za-z0-9]+) (.*)$`)

// optimPath turns a pkg/optim error into a spec field path and message: a
// shared field is spec.optimizer.<field>, any other one sits in the chosen
// optimizer's section (apollo-mini's errors say apollo, the type it shares).
func optimPath(msg string, info optimizerInfo) (string, string) {
	m := optimMessage.FindStringSubmatch(msg)
	if m == nil {
		return "spec.optimizer", msg
	}
	field, rest := m[2], m[3]
	rest = strings.ReplaceAll(rest, "optimizer."+m[1]+".", "spec.optimizer."+info.section+".")
	if isSharedField(field) {
		return "spec.optimizer." + field, rest
	}
	return "spec.optimizer." + info.section + "." + field, rest
}

// resolve fills dst, a pointer to a pkg/optim configuration that already
// holds the optimizer's reference values, from the shared fields it has and
// from the fields of section (a pointer to a section struct, possibly nil).
func (o *OptimizerSpec) resolve(dst any, section any) {
	d := reflect.ValueOf(dst).Elem()
	sv := reflect.ValueOf(o).Elem()
	for _, f := range sharedOptimizerFields {
		if df := d.FieldByName(f.goName); df.IsValid() {
			df.SetFloat(sv.FieldByName(f.goName).Float())
		}
	}
	s := reflect.ValueOf(section)
	if s.IsNil() {
		return
	}
	s = s.Elem()
	for i := 0; i < s.NumField(); i++ {
		df := d.FieldByName(s.Type().Field(i).Name)
		df.Set(s.Field(i).Convert(df.Type()))
	}
}

// AdamWConfig is the AdamW configuration of the job (PyTorch convention).
func (o *OptimizerSpec) AdamWConfig() optim.AdamWConfig {
	c := adamwDefaults
	o.resolve(&c, (*struct{})(nil))
	return c
}

// AdafactorConfig is the Adafactor configuration of the job.
func (o *OptimizerSpec) AdafactorConfig() optim.AdafactorConfig {
	c := optim.DefaultAdafactorConfig()
	o.resolve(&c, o.Adafactor)
	return c
}

// CAMEConfig is the CAME configuration of the job.
func (o *OptimizerSpec) CAMEConfig() optim.CAMEConfig {
	c := optim.DefaultCAMEConfig()
	o.resolve(&c, o.CAME)
	return c
}

// AdamMiniConfig is the Adam-mini configuration of the job; the caller sets
// the head size with ForModel.
func (o *OptimizerSpec) AdamMiniConfig() optim.AdamMiniConfig {
	c := optim.DefaultAdamMiniConfig()
	o.resolve(&c, o.AdamMini)
	return c
}

// GaLoreConfig is the GaLore configuration of the job.
func (o *OptimizerSpec) GaLoreConfig() optim.GaLoreConfig {
	c := optim.DefaultGaLoreConfig()
	o.resolve(&c, o.GaLore)
	return c
}

// ApolloConfig is the configuration of the job's APOLLO or, with name
// apollo-mini, APOLLO-Mini. The caller sets Seed from spec.seed.
func (o *OptimizerSpec) ApolloConfig() optim.ApolloConfig {
	if o.Name == "apollo-mini" {
		c := optim.DefaultApolloMiniConfig()
		o.resolve(&c, o.ApolloMini)
		return c
	}
	c := optim.DefaultApolloConfig()
	o.resolve(&c, o.Apollo)
	return c
}

// MicroAdamConfig is the MicroAdam configuration of the job.
func (o *OptimizerSpec) MicroAdamConfig() optim.MicroAdamConfig {
	c := optim.DefaultMicroAdamConfig()
	o.resolve(&c, o.MicroAdam)
	return c
}

// DemoConfig is the DeMo configuration of the job.
func (o *OptimizerSpec) DemoConfig() optim.DemoConfig {
	c := optim.DefaultDemoConfig()
	o.resolve(&c, o.Demo)
	return c
}

// GrassConfig is the GRASS configuration of the job. The caller sets Seed
// from spec.seed.
func (o *OptimizerSpec) GrassConfig() optim.GrassConfig {
	c := optim.DefaultGrassConfig()
	o.resolve(&c, o.Grass)
	return c
}
