//! HTTPRoutes attached to Services (the GAMMA shape: a `parentRef` of kind `Service`,
//! group `""` or `core`) as the routes of those services: path (`Exact`, `PathPrefix`),
//! method and header (`Exact`) matches, weighted `backendRefs` to Services of any
//! namespace, `timeouts.request` (and `timeouts.backendRequest` as the per-try timeout).
//! Anything else a route asks for (filters, regular expressions, query parameters,
//! retries, ...) refuses that route whole, as a problem naming it: serving half of it
//! would route differently than its author wrote. Routes are ordered as the Gateway API
//! says: exact paths, then longer prefixes, then method matches, then more header
//! matches, then older routes (then by namespace/name), then the order written.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::time::Duration;

use http::{HeaderName, Method};

use super::Problem;
use crate::kubernetes::objects::{self, HttpBackendRef, HttpRoute, HttpRouteMatch, HttpRouteRule};
use crate::model::{BackendRef, PathMatch, RouteMatch, RouteModel, ServiceModel};

/// Where a route stands among its Service's routes (smallest first).
type Precedence = (u8, Reverse<usize>, u8, Reverse<usize>, usize, usize, usize);

/// Sets the routes of `services` from `routes`; refused routes become problems.
pub fn attach(
    routes: &[HttpRoute],
    services: &mut BTreeMap<String, ServiceModel>,
    problems: &mut Vec<Problem>,
) {
    let mut ordered: Vec<&HttpRoute> = routes.iter().collect();
    ordered.sort_by(|a, b| {
        let age = |route: &HttpRoute| route.metadata.creation_timestamp.clone().map(|time| time.0);
        let order = |route: &&HttpRoute| {
            (
                objects::namespace(&route.metadata).to_owned(),
                objects::name(&route.metadata).to_owned(),
            )
        };
        age(a).cmp(&age(b)).then_with(|| order(a).cmp(&order(b)))
    });
    let mut attached: BTreeMap<String, Vec<(Precedence, RouteModel)>> = BTreeMap::new();
    for (position, route) in ordered.into_iter().enumerate() {
        let namespace = objects::namespace(&route.metadata);
        let problem = |message: String| Problem {
            kind: "HTTPRoute",
            namespace: namespace.to_owned(),
            name: objects::name(&route.metadata).to_owned(),
            bad_policy: false,
            message,
        };
        for parent in &route.spec.parent_refs {
            let is_service = parent.kind.as_deref() == Some("Service")
                && matches!(parent.group.as_deref(), Some("" | "core"));
            if !is_service {
                continue;
            }
            let parent_namespace = parent.namespace.as_deref().unwrap_or(namespace);
            if parent_namespace != namespace {
                problems.push(problem(format!(
                    "parentRef Service {parent_namespace}/{} is in another namespace: routes \
                     for a Service's callers in other namespaces (consumer routes) are not \
                     supported; the route is skipped",
                    parent.name
                )));
                continue;
            }
            let key = format!("{}.{parent_namespace}", parent.name);
            let Some(service) = services.get(&key) else {
                problems.push(problem(format!(
                    "parentRef Service {parent_namespace}/{} is not in the mesh; the route is \
                     skipped",
                    parent.name
                )));
                continue;
            };
            match read_route(route, service, services, position) {
                Ok(models) => attached.entry(key).or_default().extend(models),
                Err(why) => problems.push(problem(format!("{why}; the route is skipped"))),
            }
        }
    }
    for (key, mut routes) in attached {
        routes.sort_by_key(|(precedence, _)| *precedence);
        if let Some(service) = services.get_mut(&key) {
            service.routes = routes.into_iter().map(|(_, route)| route).collect();
        }
    }
}

/// The route's rules as routes of `service`, one per match.
fn read_route(
    route: &HttpRoute,
    service: &ServiceModel,
    services: &BTreeMap<String, ServiceModel>,
    position: usize,
) -> Result<Vec<(Precedence, RouteModel)>, String> {
    let namespace = objects::namespace(&route.metadata);
    let mut models = Vec::new();
    for (rule_index, rule) in route.spec.rules.iter().enumerate() {
        let at = |why: String| format!("rules[{rule_index}]: {why}");
        check_rule(rule).map_err(at)?;
        let mut policy = service.policy.clone();
        if let Some(timeouts) = &rule.timeouts {
            if let Some(request) = &timeouts.request {
                policy.timeout = duration(request, "timeouts.request").map_err(at)?;
            }
            if let Some(backend) = &timeouts.backend_request {
                policy.retries.per_try_timeout =
                    duration(backend, "timeouts.backendRequest").map_err(at)?;
            }
        }
        let backends = rule
            .backend_refs
            .iter()
            .enumerate()
            .filter_map(|(index, backend)| {
                backend_ref(backend, namespace, services)
                    .map_err(|why| at(format!("backendRefs[{index}]: {why}")))
                    .transpose()
            })
            .collect::<Result<Vec<_>, _>>()?;
        if backends.is_empty() && !rule.backend_refs.is_empty() {
            return Err(at(
                "every backendRef has weight 0, so no request could be served".into(),
            ));
        }
        let default_match = [HttpRouteMatch::default()];
        let matches = if rule.matches.is_empty() {
            &default_match[..]
        } else {
            &rule.matches[..]
        };
        for (match_index, spec) in matches.iter().enumerate() {
            let route_match =
                route_match(spec).map_err(|why| at(format!("matches[{match_index}]: {why}")))?;
            let precedence = precedence(&route_match, position, rule_index, match_index);
            models.push((
                precedence,
                RouteModel {
                    route_match,
                    policy: policy.clone(),
                    backends: backends.clone(),
                    allow: None,
                    own_rate_limit: false,
                },
            ));
        }
    }
    Ok(models)
}

/// Refuses the rule features Seam does not serve.
fn check_rule(rule: &HttpRouteRule) -> Result<(), String> {
    if !rule.filters.is_empty() {
        return Err("filters are not supported".into());
    }
    if let Some(key) = rule.other.keys().find(|key| key.as_str() != "name") {
        return Err(format!("{key} is not supported"));
    }
    Ok(())
}

/// A backendRef as a weighted backend; `None` for weight 0.
fn backend_ref(
    backend: &HttpBackendRef,
    namespace: &str,
    services: &BTreeMap<String, ServiceModel>,
) -> Result<Option<BackendRef>, String> {
    let core = matches!(backend.group.as_deref(), None | Some("" | "core"));
    if !core || !matches!(backend.kind.as_deref(), None | Some("Service")) {
        return Err(format!(
            "{} {:?} is not a Service; only Services can be backends",
            backend.kind.as_deref().unwrap_or("Service"),
            backend.name
        ));
    }
    if !backend.filters.is_empty() {
        return Err("filters are not supported".into());
    }
    let backend_namespace = backend.namespace.as_deref().unwrap_or(namespace);
    let key = format!("{}.{backend_namespace}", backend.name);
    if !services.contains_key(&key) {
        return Err(format!(
            "Service {backend_namespace}/{} is not in the mesh",
            backend.name
        ));
    }
    let weight = backend.weight.unwrap_or(1);
    let weight = u32::try_from(weight).map_err(|_| format!("weight {weight} is negative"))?;
    Ok((weight > 0).then_some(BackendRef {
        service: key,
        weight,
    }))
}

fn route_match(spec: &HttpRouteMatch) -> Result<RouteMatch, String> {
    if !spec.query_params.is_empty() {
        return Err("queryParams matches are not supported".into());
    }
    let path = spec.path.as_ref();
    let value = path
        .and_then(|path| path.value.clone())
        .unwrap_or_else(|| "/".to_owned());
    if !value.starts_with('/') {
        return Err(format!("path {value:?} does not start with /"));
    }
    let path = match path.and_then(|path| path.kind.as_deref()) {
        None | Some("PathPrefix") => PathMatch::Prefix(value),
        Some("Exact") => PathMatch::Exact(value),
        Some(other) => return Err(format!("{other} path matches are not supported")),
    };
    let method = spec
        .method
        .as_deref()
        .map(|method| {
            Method::from_bytes(method.as_bytes())
                .map(|method| method.as_str().to_owned())
                .map_err(|_| format!("method {method:?} is not an HTTP method"))
        })
        .transpose()?;
    let mut headers = BTreeMap::new();
    for header in &spec.headers {
        if !matches!(header.kind.as_deref(), None | Some("Exact")) {
            return Err(format!(
                "{} header matches are not supported",
                header.kind.as_deref().unwrap_or_default()
            ));
        }
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| format!("header {:?} is not a header name", header.name))?;
        headers.insert(name.as_str().to_owned(), header.value.clone());
    }
    Ok(RouteMatch {
        path: Some(path),
        method,
        headers,
    })
}

fn precedence(route_match: &RouteMatch, position: usize, rule: usize, index: usize) -> Precedence {
    let (exact, length) = match &route_match.path {
        Some(PathMatch::Exact(path)) => (0, path.len()),
        Some(PathMatch::Prefix(path)) => (1, path.len()),
        None => (1, 0),
    };
    (
        exact,
        Reverse(length),
        u8::from(route_match.method.is_none()),
        Reverse(route_match.headers.len()),
        position,
        rule,
        index,
    )
}

/// A Gateway API duration (`10s`, `500ms`, `1h30m`); `0s` turns the timeout off.
fn duration(text: &str, key: &str) -> Result<Option<Duration>, String> {
    let value = humantime::parse_duration(text)
        .map_err(|err| format!("{key} is {text:?}, not a duration: {err}"))?;
    Ok((!value.is_zero()).then_some(value))
}
