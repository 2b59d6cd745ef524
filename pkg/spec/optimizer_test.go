package spec

import (
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/ternml/tern/pkg/optim"
)

func withOptimizer(yaml string) string { return minimal + "  optimizer: " + yaml + "\n" }

func TestOptimizerErrors(t *testing.T) {
	cases := []struct {
		name string
		doc  string
		want []string
	}{
		{"section of another optimizer", withOptimizer("{galore: {rank: 4}}"), []string{"spec.optimizer.galore: set, but spec.optimizer.name is adamw; remove it or set name: galore"}},
		{"apollo section with apollo-mini", withOptimizer("{name: apollo-mini, apollo: {rank: 4}}"), []string{"spec.optimizer.apollo: set, but spec.optimizer.name is apollo-mini"}},
		{"two sections", withOptimizer("{name: came, adafactor: {}, microadam: {window: 2}}"), []string{"spec.optimizer.adafactor: set, but", "spec.optimizer.microadam: set, but"}},
		{"galore rank", withOptimizer("{name: galore, galore: {rank: 0}}"), []string{"spec.optimizer.galore.rank: must be >= 1, got 0"}},
		{"galore gap", withOptimizer("{name: galore, galore: {updateProjGap: -3}}"), []string{"spec.optimizer.galore.updateProjGap: must be >= 1 step, got -3"}},
		{"galore projType", withOptimizer("{name: galore, galore: {projType: svd}}"), []string{`spec.optimizer.galore.projType: "svd" is not allowed (allowed: std, reverse_std)`}},
		{"galore unknown field", withOptimizer("{name: galore, galore: {rnak: 4}}"), []string{`spec.optimizer.galore.rnak: unknown field "rnak"`, `did you mean "rank"?`}},
		{"shared field in a section", withOptimizer("{name: galore, galore: {beta1: 0.5}}"), []string{`spec.optimizer.galore.beta1: unknown field "beta1"`}},
		{"apollo scale", withOptimizer("{name: apollo, apollo: {scale: 0}}"), []string{"spec.optimizer.apollo.scale: must be a finite number > 0, got 0"}},
		{"apollo-mini scale", withOptimizer("{name: apollo-mini, apollo-mini: {scale: -1}}"), []string{"spec.optimizer.apollo-mini.scale: must be a finite number > 0, got -1"}},
		{"apollo-mini scaleType", withOptimizer("{name: apollo-mini, apollo-mini: {scaleType: row}}"), []string{`spec.optimizer.apollo-mini.scaleType: "row" is not allowed (allowed: channel, tensor)`}},
		{"adafactor beta2", withOptimizer("{name: adafactor, beta2: 0.99}"), []string{"spec.optimizer.beta2: not used by adafactor (its own settings: ternctl explain spec.optimizer.adafactor); remove it"}},
		{"adafactor eps", withOptimizer("{name: adafactor, eps: 1e-8}"), []string{"spec.optimizer.eps: not used by adafactor"}},
		{"came eps", withOptimizer("{name: came, eps: 1e-8}"), []string{"spec.optimizer.eps: not used by came"}},
		{"adafactor decayRate", withOptimizer("{name: adafactor, adafactor: {decayRate: 0.5}}"), []string{"spec.optimizer.adafactor.decayRate: must be in [-1, 0], got 0.5"}},
		{"adafactor warmupInit", withOptimizer("{name: adafactor, adafactor: {warmupInit: true}}"), []string{"spec.optimizer.adafactor.warmupInit: needs spec.optimizer.adafactor.relativeStep: true"}},
		{"adafactor beta1", withOptimizer("{name: adafactor, beta1: 1}"), []string{"spec.optimizer.beta1: must be in [0, 1), got 1"}},
		{"came beta3", withOptimizer("{name: came, came: {beta3: 1}}"), []string{"spec.optimizer.came.beta3: must be in [0, 1), got 1"}},
		{"came eps2", withOptimizer("{name: came, came: {eps2: 0}}"), []string{"spec.optimizer.came.eps2: must be finite and > 0, got 0"}},
		{"microadam density", withOptimizer("{name: microadam, microadam: {density: 0}}"), []string{"spec.optimizer.microadam.density: must be in (0, 1], got 0"}},
		{"microadam window", withOptimizer("{name: microadam, microadam: {window: 0}}"), []string{"spec.optimizer.microadam.window: must be in [1, 65536], got 0"}},
		{"microadam block", withOptimizer("{name: microadam, microadam: {topKBlockSize: 70000}}"), []string{"spec.optimizer.microadam.topKBlockSize: must be in [1, 65536], got 70000"}},
		{"galore eps", withOptimizer("{name: galore, eps: 0}"), []string{"spec.optimizer.eps: must be > 0, got 0"}},
		{"adam-mini weight decay", withOptimizer("{name: adam-mini, weightDecay: -1}"), []string{"spec.optimizer.weightDecay: must be >= 0, got -1"}},
		{"adam-mini partition", withOptimizer("{name: adam-mini, adam-mini: {partition: paper}}"), []string{`spec.optimizer.adam-mini.partition: "paper" is not allowed (allowed: v1.1, v1.0)`}},
		{"adam-mini section with adamw", withOptimizer("{adam-mini: {partition: v1.0}}"), []string{"spec.optimizer.adam-mini: set, but spec.optimizer.name is adamw; remove it or set name: adam-mini"}},
		{"grass selection", withOptimizer("{name: grass, grass: {selection: random}}"), []string{`spec.optimizer.grass.selection`, "random"}},
		{"grass rank", withOptimizer("{name: grass, grass: {rank: 0}}"), []string{"spec.optimizer.grass.rank"}},
		{"demo values", withOptimizer("{name: demo, demo: {values: int8}}"), []string{`spec.optimizer.demo.values: "int8" is not allowed (allowed: bf16, sign)`}},
		{"demo topK", withOptimizer("{name: demo, demo: {topK: 0}}"), []string{"spec.optimizer.demo.topK"}},
		{"demo beta1", withOptimizer("{name: demo, beta1: 0.9}"), []string{"spec.optimizer.beta1: not used by demo"}},
		{"demo with dense exchange", withOptimizer("{name: demo}") + "  communication: {exchange: dense}\n", []string{`spec.communication.exchange: "dense" does not go with optimizer demo`}},
		{"section not an object", withOptimizer("{name: galore, galore: 3}"), []string{"spec.optimizer.galore: must be an object with fields (rank, updateProjGap, scale, projType)"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.doc), nil)
			if err == nil {
				t.Fatalf("Parse accepted:\n%s", c.doc)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
		})
	}
}

// TestOptimizerDefaultsAreReference checks that a job naming an optimizer
// and nothing else gets exactly pkg/optim's reference configuration.
func TestOptimizerDefaultsAreReference(t *testing.T) {
	cases := []struct {
		name string
		got  func(*OptimizerSpec) any
		want any
	}{
		{"adamw", func(o *OptimizerSpec) any { return o.AdamWConfig() }, optim.AdamWConfig{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1}},
		{"adafactor", func(o *OptimizerSpec) any { return o.AdafactorConfig() }, optim.DefaultAdafactorConfig()},
		{"came", func(o *OptimizerSpec) any { return o.CAMEConfig() }, optim.DefaultCAMEConfig()},
		{"adam-mini", func(o *OptimizerSpec) any { return o.AdamMiniConfig() }, optim.DefaultAdamMiniConfig()},
		{"galore", func(o *OptimizerSpec) any { return o.GaLoreConfig() }, optim.DefaultGaLoreConfig()},
		{"apollo", func(o *OptimizerSpec) any { return o.ApolloConfig() }, optim.DefaultApolloConfig()},
		{"apollo-mini", func(o *OptimizerSpec) any { return o.ApolloConfig() }, optim.DefaultApolloMiniConfig()},
		{"microadam", func(o *OptimizerSpec) any { return o.MicroAdamConfig() }, optim.DefaultMicroAdamConfig()},
		{"grass", func(o *OptimizerSpec) any { return o.GrassConfig() }, optim.DefaultGrassConfig()},
		{"demo", func(o *OptimizerSpec) any { return o.DemoConfig() }, optim.DefaultDemoConfig()},
	}
	if len(cases) != len(OptimizerNames) {
		t.Fatalf("%d cases for %d optimizers %v", len(cases), len(OptimizerNames), OptimizerNames)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			j, err := Parse([]byte(withOptimizer("{name: "+c.name+"}")), nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.got(&j.Spec.Optimizer); !reflect.DeepEqual(got, c.want) {
				t.Fatalf("config = %+v, want the reference %+v", got, c.want)
			}
			// Code-built jobs get the same through Default.
			k := &TrainingJob{Metadata: Metadata{Name: "t"}, Spec: JobSpec{Model: ModelSpec{Preset: "tiny"}, Optimizer: OptimizerSpec{Name: c.name}}}
			k.Default()
			if err := k.Validate(); err != nil {
				t.Fatal(err)
			}
			if string(k.CanonicalJSON()) != string(j.CanonicalJSON()) {
				t.Fatalf("Default and Parse resolve differently:\n%s\n%s", k.CanonicalJSON(), j.CanonicalJSON())
			}
			// The resolved job re-parses to itself.
			back, err := Parse(j.CanonicalJSON(), nil)
			if err != nil || string(back.CanonicalJSON()) != string(j.CanonicalJSON()) {
				t.Fatalf("canonical JSON does not round-trip: %v", err)
			}
		})
	}
}

// TestAdamMiniPartition checks that the partition reaches pkg/optim from a
// document and from --set, and defaults to the reference release's.
func TestAdamMiniPartition(t *testing.T) {
	for _, c := range []struct {
		doc  string
		set  []string
		want string
	}{
		{"{name: adam-mini}", nil, optim.AdamMiniV11},
		{"{name: adam-mini, adam-mini: {partition: v1.0}}", nil, optim.AdamMiniV10},
		{"{name: adam-mini}", []string{"optimizer.adam-mini.partition=v1.0"}, optim.AdamMiniV10},
	} {
		j, err := Parse([]byte(withOptimizer(c.doc)), c.set)
		if err != nil {
			t.Fatalf("%s %v: %v", c.doc, c.set, err)
		}
		if got := j.Spec.Optimizer.AdamMiniConfig().Partition; got != c.want {
			t.Errorf("%s %v: partition %q, want %q", c.doc, c.set, got, c.want)
		}
	}
}

func TestOptimizerOverrides(t *testing.T) {
	j, err := Parse([]byte(withOptimizer("{name: galore, beta2: 0.99, weightDecay: 0.01, galore: {rank: 16, scale: 0.5}}")), []string{"optimizer.galore.updateProjGap=50"})
	if err != nil {
		t.Fatal(err)
	}
	want := optim.DefaultGaLoreConfig()
	want.Rank, want.Scale, want.UpdateProjGap, want.Beta2, want.WeightDecay = 16, 0.5, 50, 0.99, 0.01
	if got := j.Spec.Optimizer.GaLoreConfig(); got != want {
		t.Fatalf("GaLoreConfig = %+v, want %+v", got, want)
	}
	// Explicit zeros in a section are kept, not replaced by the reference.
	j, err = Parse([]byte(withOptimizer("{name: adafactor, beta1: 0.9, adafactor: {eps2: 0, decayRate: 0}}")), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c := j.Spec.Optimizer.AdafactorConfig(); c.Eps2 != 0 || c.DecayRate != 0 || c.Beta1 != 0.9 || c.Eps1 != optim.DefaultAdafactorConfig().Eps1 {
		t.Fatalf("AdafactorConfig = %+v", c)
	}
	// Explicit zeros of shared fields an optimizer does not use are accepted.
	if _, err := Parse([]byte(withOptimizer("{name: came, eps: 0}")), nil); err != nil {
		t.Fatal(err)
	}
	// An adamw job's canonical form has no optimizer sections, so it encodes
	// as it did before they existed and old checkpoints still resume.
	j, err = Parse([]byte(minimal), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"galore", "apollo", "adafactor", "came", "microadam"} {
		if strings.Contains(string(j.CanonicalJSON()), `"`+s+`"`) {
			t.Errorf("adamw job's canonical JSON mentions %s: %s", s, j.CanonicalJSON())
		}
	}
}

func TestOptimizerTableMatchesSchema(t *testing.T) {
	var o OptimizerSpec
	for _, info := range optimizers {
		if info.section != "" {
			o.section(info.section) // panics if the struct lacks it
		}
	}
	// Every section of the struct belongs to an optimizer.
	for _, f := range fieldsOf(reflect.TypeOf(o)) {
		if !f.ptr {
			continue
		}
		found := false
		for _, info := range optimizers {
			found = found || info.section == f.name
		}
		if !found {
			t.Errorf("spec.optimizer.%s belongs to no optimizer", f.name)
		}
	}
	// The descriptions of the shared fields name the optimizers that do not
	// use them.
	for _, f := range sharedOptimizerFields {
		_, _, fi, ferr := resolvePath("spec.optimizer." + f.name)
		if ferr != nil {
			t.Fatal(ferr)
		}
		for _, info := range optimizers {
			if _, used := sharedDefault(info, f.goName); !used && !strings.Contains(fi.desc, "Not used by "+info.name) && !strings.Contains(fi.desc, "and "+info.name) {
				t.Errorf("spec.optimizer.%s: description does not say that %s does not use it: %q", f.name, info.name, fi.desc)
			}
		}
	}
}

func TestExplainOptimizerSections(t *testing.T) {
	out, err := Explain("spec.optimizer.galore")
	if err != nil {
		t.Fatal(err)
	}
	d := optim.DefaultGaLoreConfig()
	for _, w := range []string{"FIELD:    spec.optimizer.galore <object>", "rank", "default: " + strconv.Itoa(d.Rank), "updateProjGap", "allowed: std, reverse_std"} {
		if !strings.Contains(out, w) {
			t.Errorf("Explain(spec.optimizer.galore) lacks %q:\n%s", w, out)
		}
	}
	leaf, err := Explain("optimizer.apollo-mini.scale")
	if err != nil || !strings.Contains(leaf, "DEFAULT:  "+formatFloat(optim.DefaultApolloMiniConfig().Scale)) {
		t.Errorf("Explain(optimizer.apollo-mini.scale) = %q, %v", leaf, err)
	}
	shared, err := Explain("optimizer.eps")
	if err != nil || !strings.Contains(shared, "DEFAULT:  1e-8 for adamw") || !strings.Contains(shared, "not used by adafactor, came") {
		t.Errorf("Explain(optimizer.eps) = %q, %v", shared, err)
	}
	rec, err := ExplainRecursive("spec.optimizer.microadam")
	if err != nil || !strings.Contains(rec, "  window <integer>\n") {
		t.Errorf("ExplainRecursive(spec.optimizer.microadam) = %q, %v", rec, err)
	}
}
