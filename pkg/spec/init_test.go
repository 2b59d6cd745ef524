package spec

import (
	"strings"
	"testing"
)

func TestModelInit(t *testing.T) {
	for _, tc := range []struct {
		val, err string
	}{
		{"", ""},
		{"hf:/models/llama", ""},
		{"hf:relative/dir", ""},
		{"hf:", `spec.model.init: "hf:" names no directory`},
		{"/models/llama", `spec.model.init: "/models/llama" is not a known source (allowed: empty for random initialisation, or hf:DIR`},
	} {
		j, err := Parse([]byte(minimal), []string{"model.init=" + tc.val})
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("init %q: %v", tc.val, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("init %q: error %v, want %q", tc.val, err, tc.err)
		case tc.err == "":
			if dir, ok := j.Spec.Model.Init.HFDir(); ok != (tc.val != "") || ok && "hf:"+dir != tc.val {
				t.Errorf("init %q: HFDir = %q, %v", tc.val, dir, ok)
			}
		}
	}
}
