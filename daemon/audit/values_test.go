package audit

import "testing"

func TestValuesRedactedKeepsNamesVisible(t *testing.T) {
	v, changed := ValuesRedacted(map[string]any{"auth_target": "/etc/passwd", "token": "sk-live-abcdefghijklmnop1234", "cmd": []any{"rm", "hunter2-injected"}}, []string{"hunter2-injected"})
	got := v.(map[string]any)
	if !changed {
		t.Error("redacting reported no change")
	}
	if _, changed := ValuesRedacted(map[string]any{"auth": "plain"}, nil); changed {
		t.Error("nothing to redact, yet a change reported")
	}
	if got["auth_target"] != "/etc/passwd" {
		t.Errorf("a value was hidden for its name: %v", got)
	}
	if got["token"] == "sk-live-abcdefghijklmnop1234" || got["cmd"].([]any)[1] == "hunter2-injected" {
		t.Errorf("a secret value shows: %v", got)
	}
}
