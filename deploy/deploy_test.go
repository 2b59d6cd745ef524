// Package deploy_test checks the deployment files against each other and
// against the binaries: every Kubernetes manifest parses into the shapes
// the API expects, Services select pods that exist, pods mount Secrets
// and volumes that are defined, probes and Services name container ports,
// and every flag a container or a systemd unit passes is one the
// coordinator or the worker accepts (read from their --help).
package deploy_test

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/ternml/tern/pkg/auth"
)

// Minimal shapes of the Kubernetes objects the manifests use.
type (
	object struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Metadata   metadata `json:"metadata"`
	}
	metadata struct {
		Name        string            `json:"name"`
		Namespace   string            `json:"namespace"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	}
	service struct {
		object
		Spec struct {
			ClusterIP string            `json:"clusterIP"`
			Selector  map[string]string `json:"selector"`
			Ports     []struct {
				Name       string `json:"name"`
				Port       int    `json:"port"`
				TargetPort any    `json:"targetPort"`
			} `json:"ports"`
		} `json:"spec"`
	}
	statefulSet struct {
		object
		Spec struct {
			ServiceName string `json:"serviceName"`
			Replicas    *int   `json:"replicas"`
			Selector    struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			Template struct {
				Metadata metadata `json:"metadata"`
				Spec     podSpec  `json:"spec"`
			} `json:"template"`
			VolumeClaimTemplates []struct {
				Metadata metadata `json:"metadata"`
				Spec     struct {
					AccessModes []string `json:"accessModes"`
				} `json:"spec"`
			} `json:"volumeClaimTemplates"`
		} `json:"spec"`
	}
	podSpec struct {
		SecurityContext struct {
			RunAsNonRoot *bool `json:"runAsNonRoot"`
		} `json:"securityContext"`
		Containers []container `json:"containers"`
		Volumes    []struct {
			Name   string `json:"name"`
			Secret *struct {
				SecretName string `json:"secretName"`
			} `json:"secret"`
			EmptyDir              *struct{} `json:"emptyDir"`
			PersistentVolumeClaim *struct{} `json:"persistentVolumeClaim"`
		} `json:"volumes"`
	}
	container struct {
		Name    string   `json:"name"`
		Image   string   `json:"image"`
		Command []string `json:"command"`
		Args    []string `json:"args"`
		Env     []struct {
			Name string `json:"name"`
		} `json:"env"`
		Ports []struct {
			Name          string `json:"name"`
			ContainerPort int    `json:"containerPort"`
		} `json:"ports"`
		LivenessProbe  *probe `json:"livenessProbe"`
		ReadinessProbe *probe `json:"readinessProbe"`
		VolumeMounts   []struct {
			Name      string `json:"name"`
			MountPath string `json:"mountPath"`
		} `json:"volumeMounts"`
		SecurityContext struct {
			AllowPrivilegeEscalation *bool `json:"allowPrivilegeEscalation"`
			ReadOnlyRootFilesystem   *bool `json:"readOnlyRootFilesystem"`
		} `json:"securityContext"`
	}
	probe struct {
		HTTPGet *struct {
			Path string `json:"path"`
			Port any    `json:"port"`
		} `json:"httpGet"`
	}
	kustomization struct {
		object
		Namespace       string   `json:"namespace"`
		Resources       []string `json:"resources"`
		SecretGenerator []struct {
			Name  string   `json:"name"`
			Files []string `json:"files"`
		} `json:"secretGenerator"`
	}
)

const k8sDir = "kubernetes"

// manifests reads every document of every manifest but the
// kustomization, by file.
func manifests(t *testing.T) map[string][][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][][]byte{}
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
			if strings.TrimSpace(stripComments(doc)) != "" {
				out[filepath.Base(f)] = append(out[filepath.Base(f)], []byte(doc))
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("no manifests in %s", k8sDir)
	}
	return out
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func unmarshal(t *testing.T, where string, doc []byte, v any) {
	t.Helper()
	if err := yaml.Unmarshal(doc, v); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
}

func TestKubernetesManifests(t *testing.T) {
	var kust kustomization
	b, err := os.ReadFile(filepath.Join(k8sDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	unmarshal(t, "kustomization.yaml", b, &kust)
	if kust.Kind != "Kustomization" || kust.Namespace == "" {
		t.Errorf("kustomization: kind %q namespace %q", kust.Kind, kust.Namespace)
	}

	// Secrets come from the kustomization's generator, out of the files
	// `ternctl certs create` writes into certs/.
	secrets := map[string][]string{} // name -> keys
	written := []string{auth.CACertFile, auth.CAKeyFile, auth.ServerCertFile, auth.ServerKeyFile, auth.TokenFile}
	for _, g := range kust.SecretGenerator {
		for _, f := range g.Files {
			if path.Dir(f) != "certs" || !slices.Contains(written, path.Base(f)) {
				t.Errorf("secret %s: file %s is not one `ternctl certs create --dir certs` writes (%v)", g.Name, f, written)
			}
			if path.Base(f) == auth.CAKeyFile {
				t.Errorf("secret %s carries the CA's key: no pod needs it", g.Name)
			}
			secrets[g.Name] = append(secrets[g.Name], path.Base(f))
		}
	}

	docs := manifests(t)
	for f := range docs {
		if !slices.Contains(kust.Resources, f) {
			t.Errorf("%s is not among the kustomization's resources %v", f, kust.Resources)
		}
	}
	for _, r := range kust.Resources {
		if docs[r] == nil {
			t.Errorf("kustomization resource %s does not exist", r)
		}
	}

	services := map[string]service{}
	var sets []statefulSet
	kinds := map[string]string{"Namespace": "v1", "Service": "v1", "StatefulSet": "apps/v1", "Secret": "v1"}
	for f, ds := range docs {
		for i, d := range ds {
			where := fmt.Sprintf("%s document %d", f, i+1)
			var o object
			unmarshal(t, where, d, &o)
			if want, ok := kinds[o.Kind]; !ok || o.APIVersion != want || o.Metadata.Name == "" {
				t.Errorf("%s: %s %s named %q: want one of %v with its apiVersion, and a name", where, o.APIVersion, o.Kind, o.Metadata.Name, kinds)
				continue
			}
			switch o.Kind {
			case "Service":
				var s service
				unmarshal(t, where, d, &s)
				services[s.Metadata.Name] = s
			case "StatefulSet":
				var s statefulSet
				unmarshal(t, where, d, &s)
				sets = append(sets, s)
			case "Secret":
				secrets[o.Metadata.Name] = nil
			}
		}
	}
	if len(sets) != 2 {
		t.Fatalf("%d StatefulSets, want the coordinator's and the workers'", len(sets))
	}

	flags := binaryFlags(t)
	for _, s := range sets {
		checkStatefulSet(t, s, services, secrets, flags)
	}
	// Every Service selects the pods of some StatefulSet and names their
	// ports.
	for name, svc := range services {
		var target *statefulSet
		for i := range sets {
			if len(svc.Spec.Selector) > 0 && subset(svc.Spec.Selector, sets[i].Spec.Template.Metadata.Labels) {
				target = &sets[i]
			}
		}
		if target == nil {
			t.Errorf("service %s selects %v: no pod template has those labels", name, svc.Spec.Selector)
			continue
		}
		for _, p := range svc.Spec.Ports {
			if !hasPort(target.Spec.Template.Spec.Containers, p.TargetPort) {
				t.Errorf("service %s port %s: target port %v is not a container port of %s", name, p.Name, p.TargetPort, target.Metadata.Name)
			}
		}
	}
}

func checkStatefulSet(t *testing.T, s statefulSet, services map[string]service, secrets map[string][]string, flags map[string]map[string]bool) {
	name := s.Metadata.Name
	pod := s.Spec.Template.Spec
	if !subset(s.Spec.Selector.MatchLabels, s.Spec.Template.Metadata.Labels) || len(s.Spec.Selector.MatchLabels) == 0 {
		t.Errorf("%s: selector %v does not match its pod labels %v", name, s.Spec.Selector.MatchLabels, s.Spec.Template.Metadata.Labels)
	}
	gov, ok := services[s.Spec.ServiceName]
	if !ok || gov.Spec.ClusterIP != "None" {
		t.Errorf("%s: serviceName %q is not a headless Service of the manifests", name, s.Spec.ServiceName)
	}
	if pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
		t.Errorf("%s: pods may run as root", name)
	}
	volumes := map[string]string{} // name -> secret name, or ""
	for _, v := range pod.Volumes {
		switch {
		case v.Secret != nil:
			if _, ok := secrets[v.Secret.SecretName]; !ok {
				t.Errorf("%s: volume %s mounts secret %q, which neither the kustomization nor a manifest defines", name, v.Name, v.Secret.SecretName)
			}
			volumes[v.Name] = v.Secret.SecretName
		default:
			volumes[v.Name] = ""
		}
	}
	for _, c := range s.Spec.VolumeClaimTemplates {
		volumes[c.Metadata.Name] = ""
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%s: %d containers, want 1", name, len(pod.Containers))
	}
	c := pod.Containers[0]
	if c.Image == "" || len(c.Command) != 1 {
		t.Errorf("%s: image %q command %v", name, c.Image, c.Command)
	}
	if c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation || c.SecurityContext.ReadOnlyRootFilesystem == nil || !*c.SecurityContext.ReadOnlyRootFilesystem {
		t.Errorf("%s: the container may escalate privileges or write its root file system", name)
	}
	mounts := map[string]string{} // mount path -> volume
	for _, m := range c.VolumeMounts {
		if _, ok := volumes[m.Name]; !ok {
			t.Errorf("%s: mount %s names volume %q, which is not defined", name, m.MountPath, m.Name)
		}
		mounts[m.MountPath] = m.Name
	}
	for what, p := range map[string]*probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s: no %s HTTP probe", name, what)
			continue
		}
		if !hasPort(pod.Containers, p.HTTPGet.Port) || !slices.Contains([]string{"/healthz", "/readyz", "/metrics"}, p.HTTPGet.Path) {
			t.Errorf("%s: %s probe GET %s on port %v: want /healthz, /readyz or /metrics on a container port", name, what, p.HTTPGet.Path, p.HTTPGet.Port)
		}
	}

	bin := path.Base(c.Command[0])
	accepted, ok := flags[bin]
	if !ok {
		t.Errorf("%s: command %s is neither coordinator nor worker", name, c.Command[0])
		return
	}
	env := map[string]bool{}
	for _, e := range c.Env {
		env[e.Name] = true
	}
	for _, a := range c.Args {
		flag, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || !ok {
			t.Errorf("%s: argument %q: write flags as --name=value", name, a)
			continue
		}
		if !accepted[flag] {
			t.Errorf("%s: %s has no flag --%s", name, bin, flag)
		}
		for _, m := range regexp.MustCompile(`\$\((\w+)\)`).FindAllStringSubmatch(value, -1) {
			if !env[m[1]] {
				t.Errorf("%s: --%s uses $(%s), which the container's env does not define", name, flag, m[1])
			}
		}
		// A file flag must name a key of the Secret mounted at its directory.
		if slices.Contains([]string{auth.FlagTLSCert, auth.FlagTLSKey, auth.FlagTLSCA, auth.FlagTokenFile}, flag) {
			vol, ok := mounts[path.Dir(value)]
			secret := volumes[vol]
			if !ok || secret == "" {
				t.Errorf("%s: --%s=%s: no Secret is mounted at %s", name, flag, value, path.Dir(value))
			} else if keys, ok := secrets[secret]; ok && keys != nil && !slices.Contains(keys, path.Base(value)) {
				t.Errorf("%s: --%s=%s: secret %s has no key %s (keys %v)", name, flag, value, secret, path.Base(value), keys)
			}
		}
	}
}

func hasPort(cs []container, port any) bool {
	for _, c := range cs {
		for _, p := range c.Ports {
			switch v := port.(type) {
			case string:
				if p.Name == v {
					return true
				}
			case float64:
				if p.ContainerPort == int(v) {
					return true
				}
			}
		}
	}
	return false
}

func subset(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// unit is a systemd unit file: section -> key -> values, in order.
type unit map[string]map[string][]string

func parseUnit(t *testing.T, file string) unit {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	u := unit{}
	section := ""
	var cont strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if cont.Len() == 0 && (line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";")) {
			continue
		}
		if l, ok := strings.CutSuffix(line, "\\"); ok {
			cont.WriteString(l + " ")
			continue
		}
		cont.WriteString(line)
		line = cont.String()
		cont.Reset()
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			t.Fatalf("%s:%d: %q is neither a [section] nor Key=Value in one", file, n, line)
		}
		u[section][k] = append(u[section][k], v)
	}
	return u
}

// parseEnvFile reads KEY=VALUE lines.
func parseEnvFile(t *testing.T, file string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Fatalf("%s: %q is not KEY=VALUE", file, l)
		}
		out[k] = v
	}
	return out
}

func TestSystemdUnits(t *testing.T) {
	flags := binaryFlags(t)
	sysusers, err := os.ReadFile(filepath.Join("systemd", "tern.sysusers.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ unit, bin, env string }{
		{"tern-coordinator.service", "coordinator", "coordinator.env"},
		{"tern-worker.service", "worker", "worker.env"},
	} {
		u := parseUnit(t, filepath.Join("systemd", tc.unit))
		svc := u["Service"]
		if svc == nil || u["Unit"] == nil || u["Install"] == nil {
			t.Fatalf("%s: want [Unit], [Service] and [Install]", tc.unit)
		}
		one := func(k string) string {
			if len(svc[k]) != 1 {
				t.Errorf("%s: %s set %d times, want once", tc.unit, k, len(svc[k]))
				return ""
			}
			return svc[k][0]
		}
		user := one("User")
		if user == "" || user == "root" || !regexp.MustCompile(`(?m)^u `+regexp.QuoteMeta(user)+` `).Match(sysusers) {
			t.Errorf("%s: User=%q is not the dedicated user of tern.sysusers.conf", tc.unit, user)
		}
		if one("Restart") != "on-failure" {
			t.Errorf("%s: Restart=%q, want on-failure", tc.unit, svc["Restart"])
		}
		for k, want := range map[string]string{"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes", "CapabilityBoundingSet": ""} {
			if got := svc[k]; len(got) != 1 || got[0] != want {
				t.Errorf("%s: %s=%v, want %q", tc.unit, k, got, want)
			}
		}
		envFile := one("EnvironmentFile")
		if path.Base(envFile) != tc.env {
			t.Errorf("%s: EnvironmentFile=%s, want the %s installed from here", tc.unit, envFile, tc.env)
		}
		env := parseEnvFile(t, filepath.Join("systemd", tc.env))
		words := strings.Fields(one("ExecStart"))
		if len(words) == 0 || path.Base(words[0]) != tc.bin {
			t.Fatalf("%s: ExecStart %v does not run %s", tc.unit, words, tc.bin)
		}
		for i := 1; i < len(words); i++ {
			w := words[i]
			for _, m := range regexp.MustCompile(`\$\{?(\w+)\}?`).FindAllStringSubmatch(w, -1) {
				if _, ok := env[m[1]]; !ok {
					t.Errorf("%s: ExecStart uses $%s, which %s does not set", tc.unit, m[1], tc.env)
				}
			}
			if strings.HasPrefix(w, "$") {
				continue // extra flags from the environment file
			}
			name, ok := strings.CutPrefix(w, "--")
			if !ok {
				t.Errorf("%s: ExecStart word %q: want --flag value pairs", tc.unit, w)
				continue
			}
			name, _, hasValue := strings.Cut(name, "=")
			if !flags[tc.bin][name] {
				t.Errorf("%s: %s has no flag --%s", tc.unit, tc.bin, name)
			}
			if !hasValue {
				i++ // its value
			}
		}
		for k := range env {
			if !strings.Contains(one("ExecStart"), k) {
				t.Errorf("%s sets %s, which %s does not use", tc.env, k, tc.unit)
			}
		}
	}
}

var (
	flagsOnce sync.Once
	flagsBy   map[string]map[string]bool
	flagsErr  string
)

// binaryFlags builds the coordinator and the worker and reads the flags
// each accepts from its --help.
func binaryFlags(t *testing.T) map[string]map[string]bool {
	t.Helper()
	flagsOnce.Do(func() {
		dir, err := os.MkdirTemp("", "tern-deploy-test-")
		if err != nil {
			flagsErr = err.Error()
			return
		}
		defer os.RemoveAll(dir)
		out, err := exec.Command("go", "build", "-ldflags=-s -w", "-o", dir+"/", "../cmd/coordinator", "../cmd/worker").CombinedOutput()
		if err != nil {
			flagsErr = "go build: " + err.Error() + "\n" + string(out)
			return
		}
		flagsBy = map[string]map[string]bool{}
		re := regexp.MustCompile(`(?m)^\s+-{1,2}([a-z][a-z0-9-]*)`)
		for _, bin := range []string{"coordinator", "worker"} {
			// --help exits 2 after printing the flags to stderr.
			out, _ := exec.Command(filepath.Join(dir, bin), "--help").CombinedOutput()
			m := map[string]bool{}
			for _, f := range re.FindAllStringSubmatch(string(out), -1) {
				m[f[1]] = true
			}
			if !m["help"] {
				m["help"] = true
			}
			if len(m) < 4 {
				flagsErr = bin + " --help listed no flags:\n" + string(out)
				return
			}
			flagsBy[bin] = m
		}
	})
	if flagsErr != "" {
		t.Fatal(flagsErr)
	}
	return flagsBy
}
