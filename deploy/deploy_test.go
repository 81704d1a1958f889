// Package deploy_test checks the deployment files: the Kubernetes
// manifests are built with kustomize, as `kubectl apply -k` builds them,
// and every object is decoded strictly into the Kubernetes API types, so
// a misspelt field or a wrong type fails here rather than on a cluster.
package deploy_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// build runs kustomize on dir and returns the objects by kind/name.
func build(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	res, err := k.Run(filesys.MakeFsOnDisk(), dir)
	require.NoError(t, err, "kustomize build %s", dir)
	out := map[string][]byte{}
	for _, r := range res.Resources() {
		b, err := r.AsYAML()
		require.NoError(t, err)
		out[r.GetKind()+"/"+r.GetName()] = b
		if r.GetKind() != "Namespace" {
			require.Equal(t, "fhirferry", r.GetNamespace(), "%s/%s is in the fhirferry namespace", r.GetKind(), r.GetName())
		}
	}
	return out
}

// strict decodes b into v, failing on unknown fields.
func strict(t *testing.T, name string, b []byte, v any) {
	t.Helper()
	require.NoError(t, yaml.UnmarshalStrict(b, v), "%s does not match the Kubernetes API", name)
}

func TestKubernetesManifests(t *testing.T) {
	objs := build(t, "kubernetes")
	for name := range objs {
		// Applying the kustomization must never replace the user's key.
		require.False(t, strings.HasPrefix(name, "Secret/"), "the kustomization ships %s", name)
		require.False(t, strings.HasPrefix(name, "ServiceMonitor/"), "the ServiceMonitor is optional: %s", name)
	}
	typed := map[string]any{
		"Namespace/fhirferry":                  &corev1.Namespace{},
		"ConfigMap/fhirferry-config":           &corev1.ConfigMap{},
		"PersistentVolumeClaim/fhirferry-data": &corev1.PersistentVolumeClaim{},
		"Deployment/fhirferry":                 &appsv1.Deployment{},
		"Service/fhirferry":                    &corev1.Service{},
	}
	for name, v := range typed {
		b, ok := objs[name]
		require.True(t, ok, "kustomize build has no %s (has %v)", name, keys(objs))
		strict(t, name, b, v)
	}
	for name, b := range objs {
		if strings.HasPrefix(name, "NetworkPolicy/") {
			strict(t, name, b, &networkingv1.NetworkPolicy{})
			continue
		}
		_, known := typed[name]
		require.True(t, known, "%s is not checked against the API types", name)
	}

	d := typed["Deployment/fhirferry"].(*appsv1.Deployment)
	require.Equal(t, int32(1), *d.Spec.Replicas, "one writer per DuckDB file")
	require.Equal(t, appsv1.RecreateDeploymentStrategyType, d.Spec.Strategy.Type)
	// What the Deployment refers to exists in the build, except the Secret
	// the README has the user create.
	var secrets []string
	for _, v := range d.Spec.Template.Spec.Volumes {
		switch {
		case v.PersistentVolumeClaim != nil:
			require.Contains(t, objs, "PersistentVolumeClaim/"+v.PersistentVolumeClaim.ClaimName)
		case v.ConfigMap != nil:
			require.Contains(t, objs, "ConfigMap/"+v.ConfigMap.Name)
		case v.Secret != nil:
			secrets = append(secrets, v.Secret.SecretName)
		}
	}
	require.Equal(t, []string{"fhirferry-key"}, secrets)
	c := d.Spec.Template.Spec.Containers[0]
	require.Equal(t, "admin", c.Ports[0].Name)
	svc := typed["Service/fhirferry"].(*corev1.Service)
	require.Equal(t, "admin", svc.Spec.Ports[0].TargetPort.String())
	for k, v := range svc.Spec.Selector {
		require.Equal(t, v, d.Spec.Template.Labels[k], "the Service selects the Deployment's pods")
	}
}

// The ServiceMonitor comes only with the component, pointing at the
// Service's admin port.
func TestKubernetesServiceMonitorComponent(t *testing.T) {
	objs := build(t, "kubernetes/with-servicemonitor")
	b, ok := objs["ServiceMonitor/fhirferry"]
	require.True(t, ok, "with-servicemonitor builds a ServiceMonitor (has %v)", keys(objs))
	var sm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string            `json:"name"`
			Namespace string            `json:"namespace"`
			Labels    map[string]string `json:"labels"`
		} `json:"metadata"`
		Spec struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			Endpoints []struct {
				Port     string `json:"port"`
				Path     string `json:"path"`
				Interval string `json:"interval"`
			} `json:"endpoints"`
		} `json:"spec"`
	}
	strict(t, "ServiceMonitor/fhirferry", b, &sm)
	require.Equal(t, "monitoring.coreos.com/v1", sm.APIVersion)
	require.Equal(t, "admin", sm.Spec.Endpoints[0].Port)
	require.Equal(t, "/metrics", sm.Spec.Endpoints[0].Path)
	var svc corev1.Service
	strict(t, "Service/fhirferry", objs["Service/fhirferry"], &svc)
	for k, v := range sm.Spec.Selector.MatchLabels {
		require.Equal(t, v, svc.Labels[k], "the ServiceMonitor selects the Service")
	}
	require.Len(t, objs, len(build(t, "kubernetes"))+1, "the component adds the ServiceMonitor only")
}

func keys(m map[string][]byte) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
