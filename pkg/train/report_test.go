package train

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
)

// A run without evaluation has a NaN eval loss; its summary must still
// encode (the worker prints it as its last line), with null for the loss.
func TestPortableSummaryEncodesNonFinite(t *testing.T) {
	s := &Summary{Job: "j", FinalLoss: 1.5, FinalEvalLoss: math.NaN(), TokensPerS: math.Inf(1)}
	if _, err := json.Marshal(s); err == nil {
		t.Fatal("encoding/json accepted NaN: the portable form is not needed any more")
	}
	b, err := json.Marshal(s.Portable())
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	for _, want := range []string{`"final_loss":1.5`, `"final_eval_loss":null`, `"tokens_per_s":0`, `"job":"j"`} {
		if !strings.Contains(got, want) {
			t.Errorf("portable summary %s lacks %s", got, want)
		}
	}
	if strings.Count(got, `"final_eval_loss"`) != 1 {
		t.Errorf("final_eval_loss written twice: %s", got)
	}
}
