/* Shadows the system's <yajl/yajl_parse.h> for the gateway/ rooms (CMakeLists.txt, cartgate_room):
 * gateway/ reads and writes JSON through fhir/ only (fhir_json, fhir_jsonfile). */
#error "gateway/ does not call yajl: use fhir_json.h / fhir_jsonfile.h (fhir/)"
