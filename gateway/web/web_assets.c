/* web_assets — the stylesheet and script, embedded in the binary at build time
 * (cmake/embed_assets.cmake turns gateway/web/assets/ into web_assets_data.c). */
#include "web_int.h"

#include <string.h>

const unsigned char *web_asset(const char *name, size_t *len, const char **content_type)
{
    for (const web_asset_entry *e = web_asset_table; e->name; e++)
        if (!strcmp(e->name, name)) {
            *len = e->len;
            *content_type = e->content_type;
            return e->data;
        }
    return NULL;
}
