//! JSON merge patch (RFC 7386) and JSON patch (RFC 6902).

use serde_json::{Map, Value};

/// Applies an RFC 7386 merge patch in place: objects merge recursively, `null` deletes, anything else replaces.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let target = target.as_object_mut().expect("just made an object");
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Applies an RFC 6902 JSON patch (add, remove, replace, move, copy, test) to a copy of `doc`.
pub(crate) fn json_patch(doc: &Value, patch: &Value) -> Result<Value, String> {
    let ops = patch.as_array().ok_or("a JSON patch must be an array of operations")?;
    let mut doc = doc.clone();
    for (i, op) in ops.iter().enumerate() {
        apply_op(&mut doc, op).map_err(|e| format!("JSON patch operation {i} ({op}): {e}"))?;
    }
    Ok(doc)
}

fn apply_op(doc: &mut Value, op: &Value) -> Result<(), String> {
    let str_field = |name: &str| {
        op.get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("missing string field '{name}'"))
    };
    let value = || {
        op.get("value")
            .cloned()
            .ok_or_else(|| "missing field 'value'".to_string())
    };
    let path = parse_pointer(str_field("path")?)?;
    match str_field("op")? {
        "add" => add(doc, &path, value()?),
        "remove" => remove(doc, &path).map(drop),
        "replace" => {
            let target = lookup_mut(doc, &path).ok_or("path does not exist")?;
            *target = value()?;
            Ok(())
        }
        "move" => {
            let from = parse_pointer(str_field("from")?)?;
            if path.len() > from.len() && path[..from.len()] == from[..] {
                return Err("cannot move a value into one of its children".into());
            }
            let moved = remove(doc, &from)?;
            add(doc, &path, moved)
        }
        "copy" => {
            let from = parse_pointer(str_field("from")?)?;
            let copied = lookup_mut(doc, &from).ok_or("'from' path does not exist")?.clone();
            add(doc, &path, copied)
        }
        "test" => {
            let actual = lookup_mut(doc, &path).ok_or("path does not exist")?;
            if *actual == value()? {
                Ok(())
            } else {
                Err(format!("test failed: the value is {actual}"))
            }
        }
        other => Err(format!("unknown operation '{other}'")),
    }
}

fn parse_pointer(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let rest = pointer
        .strip_prefix('/')
        .ok_or_else(|| format!("JSON pointer '{pointer}' must start with '/'"))?;
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn lookup_mut<'a>(doc: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(doc, |v, token| match v {
        Value::Object(map) => map.get_mut(token),
        Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
        _ => None,
    })
}

fn array_index(token: &str, len: usize, allow_end: bool) -> Result<usize, String> {
    if allow_end && token == "-" {
        return Ok(len);
    }
    let i: usize = token.parse().map_err(|_| format!("'{token}' is not an array index"))?;
    let max = if allow_end { len } else { len.saturating_sub(1) };
    if i > max || (!allow_end && len == 0) {
        return Err(format!("array index {i} is out of bounds"));
    }
    Ok(i)
}

fn add(doc: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let Some((last, parent)) = path.split_last() else {
        *doc = value;
        return Ok(());
    };
    match lookup_mut(doc, parent).ok_or("the parent of the path does not exist")? {
        Value::Object(map) => {
            map.insert(last.clone(), value);
        }
        Value::Array(items) => {
            let i = array_index(last, items.len(), true)?;
            items.insert(i, value);
        }
        _ => return Err("the parent of the path is not an object or array".into()),
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &[String]) -> Result<Value, String> {
    let (last, parent) = path.split_last().ok_or("cannot remove the whole document")?;
    match lookup_mut(doc, parent).ok_or("the parent of the path does not exist")? {
        Value::Object(map) => map.remove(last).ok_or_else(|| "path does not exist".to_string()),
        Value::Array(items) => {
            let i = array_index(last, items.len(), false)?;
            Ok(items.remove(i))
        }
        _ => Err("the parent of the path is not an object or array".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}, "l": [3], "n": {"x": 1}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}, "l": [3], "n": {"x": 1}}));
    }

    #[test]
    fn json_patch_operations() {
        let doc = json!({"a": {"b": 1}, "l": [1, 2], "k/e~y": 0});
        let out = json_patch(
            &doc,
            &json!([
                {"op": "test", "path": "/a/b", "value": 1},
                {"op": "add", "path": "/l/-", "value": 3},
                {"op": "add", "path": "/l/0", "value": 0},
                {"op": "remove", "path": "/l/1"},
                {"op": "replace", "path": "/a/b", "value": 2},
                {"op": "copy", "from": "/a", "path": "/c"},
                {"op": "move", "from": "/k~1e~0y", "path": "/moved"},
            ]),
        )
        .unwrap();
        assert_eq!(out, json!({"a": {"b": 2}, "c": {"b": 2}, "l": [0, 2, 3], "moved": 0}));
        assert!(json_patch(&doc, &json!([{"op": "test", "path": "/a/b", "value": 2}])).is_err());
        assert!(json_patch(&doc, &json!([{"op": "replace", "path": "/nope", "value": 2}])).is_err());
        assert!(json_patch(&doc, &json!([{"op": "remove", "path": "/l/5"}])).is_err());
        assert!(json_patch(&doc, &json!({"op": "add"})).is_err());
    }
}
