package audit

import "testing"

func TestValuesRedactedKeepsNamesVisible(t *testing.T) {
	got := ValuesRedacted(map[string]any{"auth_target": "/etc/passwd", "token": "sk-live-abcdefghijklmnop1234", "cmd": []any{"rm", "hunter2-injected"}}, []string{"hunter2-injected"}).(map[string]any)
	if got["auth_target"] != "/etc/passwd" {
		t.Errorf("a value was hidden for its name: %v", got)
	}
	if got["token"] == "sk-live-abcdefghijklmnop1234" || got["cmd"].([]any)[1] == "hunter2-injected" {
		t.Errorf("a secret value shows: %v", got)
	}
}
