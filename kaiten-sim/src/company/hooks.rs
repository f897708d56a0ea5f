//! External webhooks per space, as `/spaces/{id}/external-webhooks` manages them.

use super::*;

/// Why an external-webhook route was refused.
#[derive(Debug)]
pub(crate) enum HookError {
    /// No such webhook in this space: 404.
    NotFound,
    /// 400 with this message.
    BadRequest(String),
    /// 402: the plan lacks external webhooks.
    NotInPlan,
    /// 403: the token's user is not an admin of the space.
    NotAdmin,
}

impl Company {
    /// The external webhooks of a space (zero or one), as `GET /spaces/{id}/external-webhooks`
    /// serves them.
    pub(crate) fn external_webhooks_of(&self, space_id: i64) -> Vec<Value> {
        self.external_webhooks
            .iter()
            .filter(|h| int(h, "space_id") == Some(space_id))
            .cloned()
            .map(Value::Object)
            .collect()
    }

    /// Checks a webhook URL as Kaiten does: present, `http(s)://`, at most 4096 characters.
    pub(super) fn check_hook_url(url: &str) -> Result<(), HookError> {
        let url = url.trim();
        if url.is_empty() {
            return Err(HookError::BadRequest("url is required".to_owned()));
        }
        if url.chars().count() > EXTERNAL_WEBHOOK_URL_MAX {
            return Err(HookError::BadRequest(format!(
                "url must be at most {EXTERNAL_WEBHOOK_URL_MAX} characters long"
            )));
        }
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(HookError::BadRequest("url must be a valid http or https URL".to_owned()));
        }
        Ok(())
    }

    /// Registers the space's external webhook (enabled); a space holds at most one.
    pub(crate) fn create_external_webhook(&mut self, space_id: i64, url: &str) -> Result<Value, HookError> {
        Self::check_hook_url(url)?;
        if self.external_webhooks.iter().any(|h| int(h, "space_id") == Some(space_id)) {
            return Err(HookError::BadRequest("External webhook for this space already exists".to_owned()));
        }
        let stamp = self.stamp();
        let id = EXTERNAL_WEBHOOK_BASE + 1 + self.external_webhooks.len() as i64;
        let author_id = self.current_user().get("id").cloned().unwrap_or(Value::Null);
        let hook = obj! {
            "id" => id,
            "space_id" => space_id,
            "url" => url.trim(),
            "enabled" => true,
            "author_id" => author_id,
            "created" => ts(stamp),
            "updated" => ts(stamp),
        };
        self.external_webhooks.push(hook.clone());
        Ok(Value::Object(hook))
    }

    /// Changes the URL and/or the `enabled` flag of a space's external webhook.
    pub(crate) fn update_external_webhook(
        &mut self,
        space_id: i64,
        id: i64,
        url: Option<&str>,
        enabled: Option<bool>,
    ) -> Result<Value, HookError> {
        if let Some(url) = url {
            Self::check_hook_url(url)?;
        }
        let index = self
            .external_webhooks
            .iter()
            .position(|h| int(h, "id") == Some(id) && int(h, "space_id") == Some(space_id))
            .ok_or(HookError::NotFound)?;
        let stamp = self.stamp();
        let hook = &mut self.external_webhooks[index];
        if let Some(url) = url {
            hook.insert("url".to_owned(), json!(url.trim()));
        }
        if let Some(enabled) = enabled {
            hook.insert("enabled".to_owned(), json!(enabled));
        }
        hook.insert("updated".to_owned(), json!(ts(stamp)));
        Ok(Value::Object(hook.clone()))
    }

    /// The URL a space's events go to: its registered external webhook, when enabled.
    pub(crate) fn webhook_target(&self, space_id: i64) -> Option<String> {
        self.external_webhooks
            .iter()
            .find(|h| int(h, "space_id") == Some(space_id))
            .filter(|h| h.get("enabled").and_then(Value::as_bool) == Some(true))
            .and_then(|h| h.get("url").and_then(Value::as_str))
            .map(str::to_owned)
    }

    /// The space an event belongs to: the card's (through its board), the board's, or the space
    /// itself; `None` for company-wide events (tags).
    pub(crate) fn event_space(&self, event: &Value) -> Option<i64> {
        let name = event.get("event").and_then(Value::as_str)?;
        let data = event.get("data")?;
        let id = data.get("id").or_else(|| data.get("old").and_then(|o| o.get("id"))).and_then(Value::as_i64)?;
        let board_space = |board_id: i64| self.board(board_id).and_then(|b| int(b, "space_id"));
        match name.split(':').next()? {
            "card" => self.cards.get(id).and_then(|c| int(&c, "board_id")).and_then(board_space),
            "board" => board_space(id),
            "space" => Some(id),
            _ => None,
        }
    }
}
