//! How both binaries word an error for a person: the error and each of its causes on one
//! line, joined with `: `, leaving out a cause whose text the line already holds. Libraries
//! often repeat their source in their own message (tonic and hyper do), which printed as
//! is gives `Connection refused (os error 111): Connection refused (os error 111)`.

use std::error::Error;

/// `error` and its sources, each said once.
pub fn error_chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !cause_text.is_empty() && !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Layer {
        text: &'static str,
        #[source]
        cause: Option<Box<Layer>>,
    }

    fn chain(texts: &[&'static str]) -> Layer {
        let mut error: Option<Box<Layer>> = None;
        for text in texts.iter().rev() {
            error = Some(Box::new(Layer { text, cause: error }));
        }
        *error.expect("at least one layer")
    }

    #[test]
    fn each_cause_is_said_once() {
        let cases: [(&[&str], &str); 4] = [
            (&["cannot connect"], "cannot connect"),
            (
                &["discovery stream", "transport error", "refused"],
                "discovery stream: transport error: refused",
            ),
            (
                &[
                    "Connection refused (os error 111)",
                    "Connection refused (os error 111)",
                ],
                "Connection refused (os error 111)",
            ),
            (
                &[
                    "client error (Connect): tcp connect error",
                    "tcp connect error",
                    "",
                ],
                "client error (Connect): tcp connect error",
            ),
        ];
        for (layers, want) in cases {
            assert_eq!(error_chain(&chain(layers)), want, "{layers:?}");
        }
    }
}
