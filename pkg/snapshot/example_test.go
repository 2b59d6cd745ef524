package snapshot_test

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/ternml/tern/pkg/safetensors"
	"github.com/ternml/tern/pkg/snapshot"
)

func Example() {
	dir, _ := os.MkdirTemp("", "ckpt")
	defer os.RemoveAll(dir)

	for step := int64(100); step <= 300; step += 100 {
		st := &snapshot.State{
			Step:   step,
			Job:    "tiny",
			Cursor: json.RawMessage(fmt.Sprintf(`{"index":%d}`, step*8)),
			Tensors: []snapshot.Tensor{
				snapshot.Whole(safetensors.F32("model.norm.weight", []int{2}, []float32{1, float32(step)})),
				snapshot.Whole(safetensors.F32("optim.model.norm.weight.exp_avg", []int{2}, []float32{0, 0})),
			},
		}
		if _, err := snapshot.Save(dir, st, 2); err != nil { // keep the two newest
			fmt.Println(err)
			return
		}
	}
	st, err := snapshot.Load(dir) // the newest complete step, fully verified
	if err != nil {
		fmt.Println(err)
		return
	}
	w, _ := st.Tensors[0].Float32s()
	fmt.Println(st.Step, string(st.Cursor), st.Tensors[0].Name, w)
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		fmt.Println(e.Name())
	}
	// Output:
	// 300 {"index":2400} model.norm.weight [1 300]
	// step-00000200
	// step-00000300
}
