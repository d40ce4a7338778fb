{{/* The API+UI pod template, shared by the embedded StatefulSet and the scale Deployment. */}}
{{- define "appliance.apiPodTemplate" -}}
metadata:
  labels:
    {{- include "appliance.labels" . | nindent 4 }}
    app.kubernetes.io/component: api
  annotations:
    # Settings and secrets are read at start: a change rolls the pods.
    checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
    checksum/secret: {{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}
    {{- with .Values.api.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "appliance.serviceAccountName" . }}
  # The appliance never talks to the Kubernetes API.
  automountServiceAccountToken: false
  {{- with (include "appliance.imagePullSecrets" .) }}{{ . | nindent 2 }}{{ end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - name: api
      image: {{ include "appliance.image" (dict "ctx" . "image" .Values.image "tag" .Chart.AppVersion) | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      command: ["appliance"]
      args: ["serve"]
      {{- include "appliance.env" . | nindent 6 }}
      ports:
        - name: http
          containerPort: {{ .Values.service.port }}
          protocol: TCP
      readinessProbe:
        {{- toYaml .Values.api.readinessProbe | nindent 8 }}
      livenessProbe:
        {{- toYaml .Values.api.livenessProbe | nindent 8 }}
      startupProbe:
        {{- toYaml .Values.api.startupProbe | nindent 8 }}
      resources:
        {{- toYaml .Values.api.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        - {name: data, mountPath: /data}
        - {name: tmp, mountPath: /tmp}
  volumes:
    {{- include "appliance.tmpVolume" . | nindent 4 }}
    {{- if include "appliance.scale" . }}
    {{- include "appliance.scaleDataVolume" . | nindent 4 }}
    {{- end }}
  {{- with .Values.api.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.api.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.api.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* The data dir of scale mode's pods: a shared claim when named, else an emptyDir. */}}
{{- define "appliance.scaleDataVolume" -}}
- name: data
{{- if .Values.scaleData.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ .Values.scaleData.existingClaim }}
{{- else }}
  emptyDir:
    sizeLimit: {{ .Values.scaleData.sizeLimit }}
{{- end }}
{{- end }}
