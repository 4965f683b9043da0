/* Embedding adabmupscale in a C application: two streams upscaled at once, each tuned
 * through its element's properties while playing, each frame's stats read from the bus.
 *
 *   cc examples/embed.c -o embed $(pkg-config --cflags --libs gstreamer-1.0)
 *   GST_PLUGIN_PATH=target/release ./embed [FRAMES]
 *
 * Stream "low" gets one bit less on every frame after its thresholds are raised above any
 * complexity (image-lower = image-upper = 1e6: b_I = -1); stream "high" one bit more after
 * they are lowered to 0 (b_I = +1). Halfway, stream "low" also changes its model: the
 * built-in w4a4 to the built-in w8a6 (precision=w8a6), as a server might when it has room to
 * spare; each frame's stats name the model that ran it. Exits 0 when both streams ran to the
 * end, their frames before the change had another b_I, every frame after it (past the few
 * already in flight) had the new one, and every frame of "low" after its model change ran
 * the new model; 1 otherwise. */
#include <gst/gst.h>
#include <stdlib.h>

typedef struct {
  const char *name;
  GstElement *pipeline;
  GstElement *upscale;
  double threshold;     /* the new image-lower and image-upper */
  int want_bits;        /* the b_I every later frame must get */
  guint64 change_after; /* the frame after which the thresholds change */
  guint64 frames;       /* frames seen */
  guint64 changed_at;   /* frame at which the change was made (0: not yet) */
  guint64 checked;      /* later frames with the wanted b_I */
  guint64 wrong;        /* later frames without it */
  guint64 before;       /* frames before the change with another b_I */
  const char *switch_to; /* precision to change to halfway (NULL: none) */
  guint64 switched_at;   /* frame at which the precision changed (0: not yet) */
  guint64 new_model;     /* later frames run by the new model */
  guint64 old_model;     /* later frames run by another */
  gboolean done;
} Stream;

static GMainLoop *loop;
static Stream streams[2];
static gboolean failed;

/* Frames still in flight when the properties change may use the old thresholds. */
#define IN_FLIGHT 3

static void maybe_quit(void) {
  if (streams[0].done && streams[1].done)
    g_main_loop_quit(loop);
}

static gboolean on_message(GstBus *bus, GstMessage *msg, gpointer data) {
  Stream *s = data;
  (void)bus;
  switch (GST_MESSAGE_TYPE(msg)) {
  case GST_MESSAGE_ELEMENT: {
    const GstStructure *st = gst_message_get_structure(msg);
    guint64 frame = 0;
    gint bits = 0;
    gdouble complexity = 0, fab = 0;
    if (!gst_structure_has_name(st, "adabm-stats"))
      break;
    gst_structure_get_uint64(st, "frame", &frame);
    gst_structure_get_int(st, "image-bits", &bits);
    gst_structure_get_double(st, "complexity", &complexity);
    gst_structure_get_double(st, "fab", &fab);
    s->frames++;
    if (s->switch_to) {
      const gchar *model = gst_structure_get_string(st, "model");
      if (s->switched_at == 0 && frame >= s->change_after * 2) {
        /* An enum property from its nick: gst_util_set_object_arg parses it. */
        gst_util_set_object_arg(G_OBJECT(s->upscale), "precision", s->switch_to);
        s->switched_at = frame;
        g_print("%-4s frame %3" G_GUINT64_FORMAT ": precision = %s (was %s)\n", s->name, frame,
                s->switch_to, model ? model : "?");
      } else if (s->switched_at > 0 && frame > s->switched_at + IN_FLIGHT) {
        if (model && g_str_has_suffix(model, s->switch_to))
          s->new_model++;
        else
          s->old_model++;
      }
    }
    if (frame % 10 == 0)
      g_print("%-4s frame %3" G_GUINT64_FORMAT ": complexity %.4f, b_I %+d, FAB %.2f\n",
              s->name, frame, complexity, bits, fab);
    if (s->changed_at == 0 && frame >= s->change_after) {
      /* Any thread may set the properties while the pipeline plays. */
      g_object_set(s->upscale, "image-lower", s->threshold, "image-upper", s->threshold,
                   NULL);
      s->changed_at = frame;
      g_print("%-4s frame %3" G_GUINT64_FORMAT ": image-lower = image-upper = %g\n", s->name,
              frame, s->threshold);
    } else if (s->changed_at == 0 && bits != s->want_bits) {
      s->before++;
    } else if (s->changed_at > 0 && frame > s->changed_at + IN_FLIGHT) {
      if (bits == s->want_bits)
        s->checked++;
      else
        s->wrong++;
    }
    break;
  }
  case GST_MESSAGE_ERROR: {
    GError *err = NULL;
    gchar *debug = NULL;
    gst_message_parse_error(msg, &err, &debug);
    g_printerr("%s: error from %s: %s\n%s\n", s->name, GST_OBJECT_NAME(GST_MESSAGE_SRC(msg)),
               err->message, debug ? debug : "");
    g_clear_error(&err);
    g_free(debug);
    failed = TRUE;
    s->done = TRUE;
    maybe_quit();
    break;
  }
  case GST_MESSAGE_EOS:
    s->done = TRUE;
    maybe_quit();
    break;
  default:
    break;
  }
  return G_SOURCE_CONTINUE;
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 40;
  /* Each stream starts on the other side: snow is complex (b_I +1 with the model's
   * thresholds), the ball on black is not (b_I -1). */
  const char *patterns[2] = {"snow", "ball"};
  double thresholds[2] = {1e6, 0.0};
  int want[2] = {-1, +1};
  const char *names[2] = {"low", "high"};
  const char *switch_to[2] = {"w8a6", NULL};
  int i, ok;

  gst_init(&argc, &argv);
  if (n < 2 * IN_FLIGHT + 4) {
    g_printerr("FRAMES must be at least %d\n", 2 * IN_FLIGHT + 4);
    return 2;
  }
  loop = g_main_loop_new(NULL, FALSE);
  for (i = 0; i < 2; i++) {
    Stream *s = &streams[i];
    GError *err = NULL;
    gchar *desc = g_strdup_printf(
        "videotestsrc is-live=true num-buffers=%d pattern=%s ! "
        "video/x-raw,format=I420,width=160,height=90,framerate=30/1 ! "
        "adabmupscale name=up precision=w4a4 post-stats=true ! fakesink",
        n, patterns[i]);
    GstBus *bus;
    s->name = names[i];
    s->threshold = thresholds[i];
    s->want_bits = want[i];
    s->change_after = n / 4;
    s->switch_to = switch_to[i];
    s->pipeline = gst_parse_launch(desc, &err);
    g_free(desc);
    if (!s->pipeline || err) {
      g_printerr("%s: %s\n", s->name, err ? err->message : "no pipeline");
      return 1;
    }
    s->upscale = gst_bin_get_by_name(GST_BIN(s->pipeline), "up");
    if (!s->upscale) {
      g_printerr("adabmupscale not found: is GST_PLUGIN_PATH set to the plugin's folder?\n");
      return 1;
    }
    bus = gst_element_get_bus(s->pipeline);
    gst_bus_add_watch(bus, on_message, s);
    gst_object_unref(bus);
    if (gst_element_set_state(s->pipeline, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
      g_printerr("%s: cannot start the pipeline\n", s->name);
      return 1;
    }
  }
  g_main_loop_run(loop);

  ok = !failed;
  for (i = 0; i < 2; i++) {
    Stream *s = &streams[i];
    gchar *backend = NULL;
    g_object_get(s->upscale, "active-backend", &backend, NULL);
    g_print("%-4s %" G_GUINT64_FORMAT " frames on %s; before the change %" G_GUINT64_FORMAT
            " with another b_I, after it %" G_GUINT64_FORMAT " with b_I %+d and %" G_GUINT64_FORMAT
            " without\n",
            s->name, s->frames, backend ? backend : "?", s->before, s->checked, s->want_bits,
            s->wrong);
    g_free(backend);
    if (s->frames != (guint64)n || s->before == 0 || s->checked == 0 || s->wrong > 0)
      ok = FALSE;
    if (s->switch_to) {
      g_print("%-4s after precision = %s: %" G_GUINT64_FORMAT " frames by the new model, %"
              G_GUINT64_FORMAT " by another\n",
              s->name, s->switch_to, s->new_model, s->old_model);
      if (s->new_model == 0 || s->old_model > 0)
        ok = FALSE;
    }
    gst_element_set_state(s->pipeline, GST_STATE_NULL);
    gst_object_unref(s->upscale);
    gst_object_unref(s->pipeline);
  }
  g_main_loop_unref(loop);
  g_print("%s\n", ok ? "OK" : "FAILED");
  return ok ? 0 : 1;
}
