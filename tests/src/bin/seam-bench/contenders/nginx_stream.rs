//! Whether this nginx can proxy raw TCP (its `stream` module), and the directive its
//! configuration needs for that. Debian builds the module as a dynamic one, shipped in a
//! package of its own (`libnginx-mod-stream`), which a configuration loads with
//! `load_module`; an nginx with the module compiled in needs nothing. Without the module
//! the opaque TCP scenario reports nginx as missing it, with the command that installs
//! it, as it reports a missing load tool.

use std::path::Path;

use crate::measure::Unmeasured;

/// The command that installs the module on Debian.
const INSTALL: &str = "apt-get install -y libnginx-mod-stream";

/// Where Debian's nginx looks for modules, when `nginx -V` does not say.
const DEFAULT_MODULES_PATH: &str = "/usr/lib/nginx/modules";

/// The lines a configuration using `stream` starts with (empty for a compiled-in
/// module), from what `nginx -V` says of how nginx was built.
pub async fn load_directive() -> Result<String, Unmeasured> {
    let output = tokio::process::Command::new("nginx")
        .arg("-V")
        .output()
        .await
        .map_err(|err| Unmeasured::Failed(format!("cannot run `nginx -V`: {err}")))?;
    // nginx prints its build configuration on stderr.
    let built = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    directive_for(&built, |module| module.is_file())
}

/// The directive for an nginx built as `built` (its `nginx -V` text) says, where
/// `installed` tells whether a module file is there.
fn directive_for(built: &str, installed: impl Fn(&Path) -> bool) -> Result<String, Unmeasured> {
    let arguments: Vec<&str> = built.split_whitespace().collect();
    if arguments.contains(&"--with-stream") {
        return Ok(String::new());
    }
    let modules = arguments
        .iter()
        .find_map(|argument| argument.strip_prefix("--modules-path="))
        .unwrap_or(DEFAULT_MODULES_PATH);
    let module = Path::new(modules).join("ngx_stream_module.so");
    if installed(&module) {
        Ok(format!("load_module {};\n", module.display()))
    } else {
        Err(Unmeasured::Missing(format!(
            "nginx's stream module is not installed (no {}): {INSTALL}",
            module.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str = "nginx version: nginx/1.22.1\nbuilt with OpenSSL 3.0.11\n\
        configure arguments: --prefix=/usr/share/nginx --modules-path=/usr/lib/nginx/modules \
        --with-stream=dynamic --with-stream_ssl_module";

    #[test]
    fn a_dynamic_module_is_loaded_from_where_nginx_keeps_modules() {
        let directive = directive_for(DEBIAN, |module| {
            module == Path::new("/usr/lib/nginx/modules/ngx_stream_module.so")
        });
        assert_eq!(
            directive.unwrap(),
            "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n"
        );
    }

    #[test]
    fn a_module_not_installed_is_missing_with_its_install_command() {
        match directive_for(DEBIAN, |_| false) {
            Err(Unmeasured::Missing(why)) => assert!(why.ends_with(INSTALL), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_compiled_in_module_needs_no_directive() {
        let built = "configure arguments: --with-stream --with-stream_ssl_module";
        assert_eq!(directive_for(built, |_| false).unwrap(), "");
    }
}
