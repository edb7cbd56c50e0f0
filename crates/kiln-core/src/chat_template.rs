//! Chat templates: the Jinja template a model was trained with, rendered with `minijinja`
//! the way Hugging Face transformers renders it (trim_blocks, lstrip_blocks, Python string
//! methods, `raise_exception`), so that messages become exactly the model's prompt.

use crate::error::{Error, Result};
use minijinja::{context, Environment, ErrorKind};
use serde::{Deserialize, Serialize};

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` (or `tool`).
    pub role: String,
    /// The text of the message.
    pub content: String,
}

impl ChatMessage {
    /// A message with this role and content.
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

/// A compiled chat template with the special-token strings it may refer to.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

/// Gemma's turn format (the template Gemma 3's tokenizer config ships, text-only), for GGUF
/// files that carry no template of their own: a system message is prefixed to the first user
/// turn, roles must alternate, and the assistant's role is called `model`.
pub const GEMMA_TEMPLATE: &str = concat!(
    "{{ bos_token }}",
    "{%- if messages[0]['role'] == 'system' -%}",
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}",
    "{%- set loop_messages = messages[1:] -%}",
    "{%- else -%}",
    "{%- set first_user_prefix = '' -%}",
    "{%- set loop_messages = messages -%}",
    "{%- endif -%}",
    "{%- for message in loop_messages -%}",
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}",
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}",
    "{%- endif -%}",
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}",
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}",
    "{{ message['content'] | trim }}",
    "{{ '<end_of_turn>\n' }}",
    "{%- endfor -%}",
    "{%- if add_generation_prompt -%}",
    "{{ '<start_of_turn>model\n' }}",
    "{%- endif -%}",
);

impl ChatTemplate {
    /// Compiles `source`; `bos_token` and `eos_token` are the strings templates see under those names.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_template_owned("chat".to_string(), source.to_string())
            .map_err(|e| Error::Tokenizer(format!("the chat template does not compile: {e}")))?;
        Ok(Self {
            env,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// Renders `messages` into a prompt; `add_generation_prompt` opens the assistant's turn.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        })
        .map_err(|e| Error::Tokenizer(format!("rendering the chat template: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_with_trimmed_blocks() {
        // trim_blocks drops the newline after a block tag (not after an expression).
        let src = "{% for m in messages %}\n{{ '<|im_start|>' + m['role'] + '\\n' + m['content'].strip() + '<|im_end|>\\n' }}{% endfor %}\n{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
        let t = ChatTemplate::new(src, "<s>", "</s>").unwrap();
        let out = t
            .render(&[ChatMessage::new("user", "  hi  ")], true)
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn raise_exception_is_an_error() {
        let t = ChatTemplate::new("{{ raise_exception('roles must alternate') }}", "", "").unwrap();
        let err = t.render(&[], false).unwrap_err().to_string();
        assert!(err.contains("roles must alternate"), "{err}");
    }

    #[test]
    fn gemma_fallback_formats_turns() {
        let t = ChatTemplate::new(GEMMA_TEMPLATE, "<bos>", "<eos>").unwrap();
        let out = t
            .render(
                &[
                    ChatMessage::new("user", "Hi"),
                    ChatMessage::new("assistant", "Hello"),
                    ChatMessage::new("user", "Bye"),
                ],
                true,
            )
            .unwrap();
        assert_eq!(
            out,
            "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
        );
        let with_system = t
            .render(
                &[
                    ChatMessage::new("system", "Be brief."),
                    ChatMessage::new("user", "  Hi  "),
                ],
                true,
            )
            .unwrap();
        assert_eq!(
            with_system,
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
        );
        let err = t
            .render(
                &[ChatMessage::new("user", "a"), ChatMessage::new("user", "b")],
                true,
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("alternate"), "{err}");
    }
}
